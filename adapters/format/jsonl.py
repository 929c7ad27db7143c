"""Strict JSONL reading into pydantic models, with errors that name the line and the field."""

import json
from collections.abc import Callable

from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def parse_jsonl(raw: bytes, model: type[M], fail: Callable[[str], Exception], *,
                max_items: int | None = None) -> list[M]:
    """Parse every non-blank line of ``raw`` as ``model``; ``fail(message)`` builds the error."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(model.model_validate(json.loads(line)))
        except json.JSONDecodeError as e:
            raise fail(f"line {number}: not valid JSON ({e.msg})") from None
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"]))
            message = first["msg"].removeprefix("Value error, ")
            raise fail(f"line {number}: {where + ': ' if where else ''}{message}") from None
        if max_items is not None and len(items) > max_items:
            raise fail(f"more than {max_items} items")
    return items
