"""What Python's json module accepts but nothing downstream can take: ``NaN``, ``Infinity`` and
``1e400`` (as inf), lone surrogates (``"\\ud800"``), and nesting deep enough to exhaust the
stack. Each used to fail later, deep in a handler or on the way to a worker, as a 500."""

import json
import math

MAX_DEPTH = 32


def unsafe_json_value(value, where: str = "", depth: int = 0) -> tuple[str, str] | None:
    """(path of the first bad value, e.g. ``messages.0.content``; what is wrong), or None."""
    if depth > MAX_DEPTH:
        return where, f"JSON nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return where, f"must be a finite number, got {value}"
    if isinstance(value, str):
        return _unsafe_text(value, where)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        path = f"{where}.{key}" if where else str(key)
        problem = (_unsafe_text(key, path) if isinstance(key, str) else None) or unsafe_json_value(item, path,
                                                                                                    depth + 1)
        if problem:
            return problem
    return None


def loads_untrusted(text: str):
    """json.loads, with stack-exhausting nesting reported as a ValueError like any other bad JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None


def _unsafe_text(text: str, where: str) -> tuple[str, str] | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # The path may hold the bad key itself: escape it, or the error message could not be sent.
        return where.encode("utf-8", "backslashreplace").decode(), "text is not valid Unicode (a lone surrogate)"
    return None
