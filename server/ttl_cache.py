"""A small time-bounded cache for lookups on every request's path (API keys, model names)."""

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.generation = 0
        """Counts clear() calls: a lookup started before a clear must not store its (stale) result."""

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._data[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, *, looked_up_in: int | None = None) -> None:
        """``looked_up_in``: the generation read before the lookup began; if the cache was cleared
        since (a key revoked, an adapter deleted), the value may be stale and is not stored."""
        if looked_up_in is not None and looked_up_in != self.generation:
            return
        self._data[key] = (time.monotonic() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self.generation += 1
        self._data.clear()
