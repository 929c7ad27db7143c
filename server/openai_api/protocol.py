"""Wire types of the OpenAI-compatible API.

Only the fields below reach a worker: OpenAI's sampling parameters plus a few of vLLM's (listed
in the README). Anything else is refused with a 400 naming the field, because vLLM reads many
more (``priority``, ``vllm_xargs``, ``kv_transfer_params``, ``prompt_embeds``, ``cache_salt``...)
that would let one tenant reorder, steer or observe the shared engine. Ranges are OpenAI's
documented ones where it has them; the worker still validates what only it can (token ids,
context length).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from adapters.format.untrusted_json import unsafe_json_value
from adapters.errors import InvalidRequestError
from server.list_envelope import ListEnvelope

# Bounds on sizes the worker would otherwise take whole (each costs engine work or memory).
MAX_STOP_SEQUENCES = 16
MAX_STOP_TOKEN_IDS = 64
MAX_LOGIT_BIAS = 300
MAX_TOOLS = 128
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs

StopText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class WorkerBoundRequest(BaseModel):
    """A request the gateway forwards to a worker: only the listed fields, JSON the worker can take."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _json_the_worker_can_take(cls, data):
        problem = unsafe_json_value(data)
        if problem:  # an InvalidRequestError (400 naming the field), not a pydantic error
            where, what = problem
            raise InvalidRequestError(f"{where or 'body'}: {what}", param=where or None)
        return data

    model: str = Field(min_length=1, max_length=512,
                       description="A base model name, or one of the caller's adapters (name or name@version)")
    stream: bool = False

    @property
    def prompt_count(self) -> int:
        return 1

    @property
    def choices(self) -> int:
        """Sequences this request starts."""
        return self.prompt_count

    @property
    def token_limit(self) -> int | None:
        return None

    @property
    def token_param(self) -> str:
        """The field that bounds the generated tokens, as the client named it."""
        return "max_tokens"


class GenerationRequest(WorkerBoundRequest):
    stream_options: StreamOptions | None = None

    # OpenAI's sampling parameters.
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=128)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: dict[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}$")],
                     Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(default=None,
                                                                                   max_length=MAX_LOGIT_BIAS)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    user: str | None = Field(default=None, max_length=256)
    echo: bool | None = None
    response_format: dict[str, Any] | None = None

    # vLLM's extras that only shape this request's own sampling.
    top_k: int | None = Field(default=None, ge=-1, le=2**31 - 1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    min_tokens: int | None = Field(default=None, ge=0)
    stop_token_ids: list[TokenId] | None = Field(default=None, max_length=MAX_STOP_TOKEN_IDS)
    ignore_eos: bool | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    # ...and only the shape of its own answer (token ids instead of token strings).
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None

    @property
    def choices(self) -> int:
        return self.prompt_count * self.n

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="Text, a list of texts, token ids, or a list of token-id lists (each a separate prompt)")
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)

    @property
    def prompt_count(self) -> int:
        if isinstance(self.prompt, list) and self.prompt and not isinstance(self.prompt[0], int):
            return len(self.prompt)
        return 1


class ChatCompletionRequest(GenerationRequest):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def token_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"


class ResponsesRequest(WorkerBoundRequest):
    """OpenAI's Responses API, stateless: vLLM's workers keep no responses (its store is off), so
    ``previous_response_id``, ``background`` and ``conversation`` are refused, and ``store`` is
    accepted but nothing is stored (the response says ``store: false``)."""

    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    store: bool | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[Annotated[str, StringConstraints(max_length=64)],
                   Annotated[str, StringConstraints(max_length=512)]] | None = Field(default=None, max_length=16)

    @property
    def token_limit(self) -> int | None:
        return self.max_output_tokens

    @property
    def token_param(self) -> str:
        return "max_output_tokens"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None
    # peftserve extensions: what an adapter is served on.
    base_model: str | None = None
    base_version: int | None = None
    rank: int | None = None
    adapter_version: int | None = None
    trained_with: str | None = None


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


ModelList = ListEnvelope[ModelCard]
