"""Wire types of the OpenAI-compatible API. Sampling parameters pass through to the worker."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _GenerationRequest(BaseModel):
    # Unknown fields are sampling parameters for vLLM; the worker validates them.
    model_config = ConfigDict(extra="allow")

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
