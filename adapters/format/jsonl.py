"""Strict JSONL reading into pydantic models, with errors that name the line and the field."""

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from adapters.format.untrusted_json import loads_untrusted, unsafe_json_value

M = TypeVar("M", bound=BaseModel)


def parse_jsonl(raw: bytes, model: type[M], fail: Callable[[str], Exception], *,
                max_items: int | None = None) -> list[M]:
    """Parse every line of ``raw`` as ``model``; ``fail(message)`` builds the error.

    Lines end at "\n" only (JSON Lines; a "\r" before it is dropped): str.splitlines() would also
    split inside valid JSON text at U+2028, \x1c or \x0c. Blank lines are skipped (files stored
    before they were refused must still parse later); a file without any line is an error."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    items = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            value = loads_untrusted(line)
        except ValueError as e:  # json.JSONDecodeError included
            raise fail(f"line {number}: not valid JSON ({getattr(e, 'msg', e)})") from None
        problem = unsafe_json_value(value)
        if problem:
            raise fail(f"line {number}: {problem[0] + ': ' if problem[0] else ''}{problem[1]}")
        try:
            items.append(model.model_validate(value))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"]))
            message = first["msg"].removeprefix("Value error, ")
            raise fail(f"line {number}: {where + ': ' if where else ''}{message}") from None
        if max_items is not None and len(items) > max_items:
            raise fail(f"more than {max_items} items")
    if not items:
        raise fail("has no lines")
    return items
