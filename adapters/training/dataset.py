"""Training data: strict JSONL parsing (errors name the line), tokenisation with the loss on
completion tokens only, and a seeded held-out split kept as the adapter's eval set."""

import json
import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.format.eval_set import ChatMessage
from adapters.format.jsonl import parse_jsonl
from adapters.errors import InvalidRequestError

IGNORE_INDEX = -100  # label value that the loss skips (prompt tokens, padding)


class TrainingRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = None
    completion: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=2)

    @model_validator(mode="after")
    def _one_form(self) -> "TrainingRecord":
        if self.messages is not None:
            if self.prompt is not None or self.completion is not None:
                raise ValueError("give either 'messages' or 'prompt' + 'completion', not both")
            if self.messages[-1].role != "assistant":
                raise ValueError("the last message must be the assistant's answer to learn")
            if not self.messages[-1].content.strip():
                raise ValueError("the assistant's answer is empty")
        else:
            if self.prompt is None or self.completion is None:
                raise ValueError("give 'prompt' and 'completion', or 'messages'")
            if not self.completion.strip():
                raise ValueError("'completion' is empty")
        return self

    def to_eval_item(self) -> dict:
        if self.messages is not None:
            return {"messages": [m.model_dump() for m in self.messages[:-1]], "expected": self.messages[-1].content}
        return {"prompt": self.prompt, "expected": self.completion}


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens


def _fail(message: str, param: str = "training_file") -> InvalidRequestError:
    return InvalidRequestError(message, code="invalid_training_file", param=param)


def parse_records(raw: bytes, *, param: str = "training_file") -> list[TrainingRecord]:
    return parse_jsonl(raw, TrainingRecord, lambda message: _fail(f"{param} {message}", param))


def tokenize(records: list[TrainingRecord], tokenizer, *, max_seq_len: int, param: str = "training_file"
             ) -> list[TokenizedExample]:
    """Prompt tokens get IGNORE_INDEX labels; examples longer than ``max_seq_len`` are refused."""
    eos = tokenizer.eos_token or ""
    out = []
    for number, r in enumerate(records, start=1):
        if r.messages is not None:
            prompt = tokenizer.apply_chat_template([m.model_dump() for m in r.messages[:-1]], tokenize=False,
                                                   add_generation_prompt=True)
            completion = r.messages[-1].content + eos
        else:
            prompt, completion = r.prompt, r.completion + eos
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        length = len(prompt_ids) + len(completion_ids)
        if length > max_seq_len:
            raise _fail(f"{param} example {number}: {length} tokens exceeds max_seq_len={max_seq_len}", param)
        out.append(TokenizedExample(prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids))
    return out


def split_held_out(records: list[TrainingRecord], fraction: float, seed: int
                   ) -> tuple[list[TrainingRecord], list[TrainingRecord]]:
    """(train, held_out): a seeded shuffle; held_out is empty when ``fraction`` is 0."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_held = int(round(len(records) * fraction))
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [records[i] for i in train], [records[i] for i in held]


def eval_set_jsonl(records: list[TrainingRecord]) -> bytes:
    return "".join(json.dumps(r.to_eval_item()) + "\n" for r in records).encode()
