"""Strict parser of an adapter's eval set: JSONL of ``{"prompt", "expected"}`` or
``{"messages", "expected"}``, kept with the adapter to judge it after a base-model upgrade."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.format.jsonl import parse_jsonl
from adapters.errors import AdapterInvalidError

SCORING_MODES = ("exact_match", "contains")
MAX_EVAL_BYTES = 16 * 1024 * 1024
MAX_EVAL_ITEMS = 10_000


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class EvalItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    expected: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_input(self) -> "EvalItem":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self


def _fail(message: str) -> AdapterInvalidError:
    return AdapterInvalidError(f"eval set: {message}", code="invalid_eval_set", param="eval_set")


def check_scoring(mode: str) -> str:
    if mode not in SCORING_MODES:
        raise AdapterInvalidError(f"eval_scoring {mode!r} is not one of {list(SCORING_MODES)}",
                                  code="invalid_eval_set", param="eval_scoring")
    return mode


def parse_eval_set(raw: bytes) -> list[EvalItem]:
    if len(raw) > MAX_EVAL_BYTES:
        raise _fail(f"{len(raw)} bytes exceeds the {MAX_EVAL_BYTES}-byte limit")
    items = parse_jsonl(raw, EvalItem, _fail, max_items=MAX_EVAL_ITEMS)
    if not items:
        raise _fail("no items")
    return items
