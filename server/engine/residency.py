"""Which adapters are loaded on one worker: LRU with a fixed number of slots.

One lock per adapter makes concurrent first requests load it once; an adapter with requests
in flight is never evicted (the least recently used idle one goes), and a request waits for
a slot when all are busy. A resident adapter costs one dict lookup per request.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from server.engine.worker_client import WorkerClient
from adapters.errors import WorkerUnavailableError
from server.metrics import GatewayMetrics


class AdapterResidency:
    def __init__(self, worker_name: str, client: WorkerClient, *, slots: int, slot_wait_s: float,
                 metrics: GatewayMetrics):
        self.worker_name = worker_name
        self.client = client
        self.slots = slots
        self.slot_wait_s = slot_wait_s
        self.metrics = metrics
        self._resident: OrderedDict[str, int] = OrderedDict()  # lora name -> requests in flight, LRU first
        self._loading: set[str] = set()  # slots taken by loads in progress (not yet usable)
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._generation = 0

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    def reset(self, generation: int) -> bool:
        """Forget everything when the worker process behind us was (re)started; True if so."""
        if generation == self._generation:
            return False
        self._generation = generation
        self._resident.clear()
        self.metrics.resident_adapters.labels(self.worker_name).set(0)
        return True

    def adopt(self, loaded: set[str]) -> None:
        """Count adapters the worker already holds as resident (idle, least recently used)."""
        free = self.slots - len(self._resident) - len(self._loading)
        for name in sorted(loaded - set(self._resident) - self._loading)[:max(0, free)]:
            self._resident[name] = 0
            self._resident.move_to_end(name, last=False)
        self.metrics.resident_adapters.labels(self.worker_name).set(len(self._resident))

    def forget(self, lora_name: str) -> None:
        """The worker no longer has it (it answered 404): load again on next use."""
        if self._resident.get(lora_name) == 0:
            del self._resident[lora_name]

    async def remove(self, lora_name: str, wait_s: float) -> None:
        """Unload an adapter once the requests in flight on it have finished (deletion)."""
        async with self._locks.setdefault(lora_name, asyncio.Lock()):
            deadline = time.monotonic() + wait_s
            while self._resident.get(lora_name, 0) > 0 and time.monotonic() < deadline:
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        pass
            if self._resident.pop(lora_name, None) is not None:
                await self.client.unload_lora(lora_name)
                self.metrics.resident_adapters.labels(self.worker_name).set(len(self._resident))
        self._locks.pop(lora_name, None)

    @asynccontextmanager
    async def use(self, lora_name: str, path: Callable[[], Awaitable[str]]) -> AsyncIterator[None]:
        """Hold ``lora_name`` resident for the duration of one request."""
        if lora_name in self._resident:  # fast path: no lock, no await
            self._resident[lora_name] += 1
            self._resident.move_to_end(lora_name)
        else:
            await self._load(lora_name, path)
        try:
            yield
        finally:
            if lora_name in self._resident:
                self._resident[lora_name] -= 1
                if self._resident[lora_name] == 0:
                    async with self._changed:
                        self._changed.notify_all()

    async def _load(self, lora_name: str, path: Callable[[], Awaitable[str]]) -> None:
        lock = self._locks.setdefault(lora_name, asyncio.Lock())
        async with lock:
            if lora_name in self._resident:  # loaded by whoever held the lock before us
                self._resident[lora_name] += 1
                self._resident.move_to_end(lora_name)
                return
            await self._free_slot()
            # The slot is reserved while loading, but the adapter joins ``_resident`` (the lock-free
            # fast path) only once the worker has it.
            self._loading.add(lora_name)
            started = time.perf_counter()
            try:
                await self.client.load_lora(lora_name, await path())
            finally:
                self._loading.discard(lora_name)
            self._resident[lora_name] = 1
            self.metrics.adapter_loads.labels(self.worker_name).inc()
            self.metrics.adapter_load_seconds.labels(self.worker_name).observe(time.perf_counter() - started)
            self.metrics.resident_adapters.labels(self.worker_name).set(len(self._resident))

    async def _free_slot(self) -> None:
        deadline = time.monotonic() + self.slot_wait_s
        while len(self._resident) + len(self._loading) >= self.slots:
            idle = next((name for name, busy in self._resident.items() if busy == 0), None)
            if idle is not None:
                del self._resident[idle]
                self.metrics.adapter_evictions.labels(self.worker_name).inc()
                await self.client.unload_lora(idle)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerUnavailableError(
                    f"all {self.slots} adapter slots of this worker are busy; retry shortly", code="adapter_slots_busy")
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        self.metrics.resident_adapters.labels(self.worker_name).set(len(self._resident))
