"""Which adapters one worker has registered, as far as this gateway knows.

vLLM keeps at most ``--max-cpu-loras`` registered adapters in memory and evicts the least
recently used one itself; a request for an evicted adapter makes the engine load it again from
its folder. So the gateway never unloads an adapter to make room: several gateways sharing a
worker cannot unload adapters the others are using (each used to run its own LRU, and one
evicted what another had in flight). Adapters are unloaded only when deleted.

One lock per adapter makes concurrent first requests register it once. A registered adapter
costs one dict lookup per request. If the worker says it does not know an adapter (it restarted,
or another gateway deleted it), ``forget`` makes the next request register it again.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from server.workers.worker_client import WorkerClient
from server.metrics import GatewayMetrics


class AdapterResidency:
    def __init__(self, worker_name: str, client: WorkerClient, *, metrics: GatewayMetrics, fetching: bool = False):
        self.worker_name = worker_name
        self.client = client
        self.metrics = metrics
        self.fetching = fetching  # the worker fetches adapters from the blob store by name
        self._in_flight: dict[str, int] = {}  # registered lora name -> this gateway's requests using it
        self._stale: set[str] = set()  # registered as far as we knew, but the worker said it is not
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._generation = 0

    @property
    def resident(self) -> list[str]:
        """Adapters registered on the worker (vLLM holds the most recently used of them in memory)."""
        return sorted(set(self._in_flight) - self._stale)

    def reset(self, generation: int) -> bool:
        """Forget everything when the worker process behind us was (re)started; True if so.
        Requests in flight keep their counts (their ends still balance them)."""
        if generation == self._generation:
            return False
        self._generation = generation
        self._stale |= set(self._in_flight)
        self._drop_idle_stale()
        return True

    def adopt(self, loaded: set[str]) -> None:
        """Count adapters the worker already holds (another gateway, or before our restart) as registered."""
        for name in loaded:
            self._in_flight.setdefault(name, 0)
            self._stale.discard(name)
        self._publish()

    def forget(self, lora_name: str) -> None:
        """The worker does not know it (it answered 404): the next request registers it again."""
        if lora_name in self._in_flight:
            self._stale.add(lora_name)
            self._drop_idle_stale()

    async def remove(self, lora_name: str, wait_s: float) -> None:
        """Unload an adapter once this gateway's requests in flight on it have finished (deletion)."""
        async with self._locks.setdefault(lora_name, asyncio.Lock()):
            deadline = time.monotonic() + wait_s
            while self._in_flight.get(lora_name, 0) > 0 and time.monotonic() < deadline:
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        pass
            self._in_flight.pop(lora_name, None)
            self._stale.discard(lora_name)
            await self.client.unload_lora(lora_name)  # 404 (not registered) is fine
            self._publish()

    @asynccontextmanager
    async def use(self, lora_name: str, path: Callable[[], Awaitable[str]]) -> AsyncIterator[None]:
        """Have ``lora_name`` registered on the worker for the duration of one request."""
        if lora_name in self._in_flight and lora_name not in self._stale:  # fast path: no lock, no await
            self._in_flight[lora_name] += 1
        else:
            await self._register(lora_name, path)
        try:
            yield
        finally:
            count = self._in_flight.get(lora_name)
            if count is not None:
                self._in_flight[lora_name] = count - 1
                if count == 1:
                    self._drop_idle_stale()
                    async with self._changed:
                        self._changed.notify_all()

    async def _register(self, lora_name: str, path: Callable[[], Awaitable[str]]) -> None:
        async with self._locks.setdefault(lora_name, asyncio.Lock()):
            if lora_name in self._in_flight and lora_name not in self._stale:  # whoever held the lock did it
                self._in_flight[lora_name] += 1
                return
            started = time.perf_counter()
            where = await path()
            if not self.fetching:  # a fetching worker resolves the name itself on the first request
                await self.client.load_lora(lora_name, where)  # "already loaded" counts as success
            self._stale.discard(lora_name)
            self._in_flight[lora_name] = self._in_flight.get(lora_name, 0) + 1
            self.metrics.adapter_loads.labels(self.worker_name).inc()
            self.metrics.adapter_load_seconds.labels(self.worker_name).observe(time.perf_counter() - started)
            self._publish()

    def _drop_idle_stale(self) -> None:
        for name in [n for n in self._stale if self._in_flight.get(n, 0) == 0]:
            self._in_flight.pop(name, None)
            self._stale.discard(name)
        self._publish()

    def _publish(self) -> None:
        self.metrics.resident_adapters.labels(self.worker_name).set(len(self._in_flight) - len(self._stale))
