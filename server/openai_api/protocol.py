"""Wire types of the OpenAI-compatible API. Sampling parameters pass through to the worker."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.format.untrusted_json import unsafe_json_value
from server.errors import InvalidRequestError


class _GenerationRequest(BaseModel):
    # Unknown fields are sampling parameters for vLLM; the worker validates them.
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _json_the_worker_can_take(cls, data):
        problem = unsafe_json_value(data)
        if problem:  # an InvalidRequestError (400 naming the field), not a pydantic error
            where, what = problem
            raise InvalidRequestError(f"{where or 'body'}: {what}", param=where or None)
        return data

    model: str = Field(min_length=1, description="A base model name, or one of the caller's adapters (name or name@version)")
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]


class ChatCompletionRequest(_GenerationRequest):
    messages: list[dict[str, Any]] = Field(min_length=1)


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


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
