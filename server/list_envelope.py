"""OpenAI's list envelope (``{"object": "list", "data": [...], "has_more": ...}``) and its
``after`` cursor, for every list endpoint."""

from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")
Row = TypeVar("Row")


class ListEnvelope(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


def page_after(rows: list[Row], *, after: str | None, limit: int, cursor: Callable[[Row], str]) -> tuple[list[Row], bool]:
    """The ``limit`` rows after the one whose public id (``cursor(row)``) is ``after`` (an unknown
    id: none), and whether more follow."""
    if after is not None:
        ids = [cursor(r) for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    return rows[:limit], len(rows) > limit
