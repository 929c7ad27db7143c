"""Waiting for something that happens in the background (a job, a release, a takeover): the one
poll-until loop of the tests, failing with what was last seen."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout_s: float = 60, *, interval_s: float = 0.1, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy, and return that; AssertionError after
    ``timeout_s`` naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s:g} s (last: {value!r})"
        time.sleep(interval_s)
    return value
