"""The residency bookkeeping in isolation (a recording fake worker client; the real worker is
exercised by test_serving.py): one load per cold adapter, no use before the load finished,
busy adapters never evicted, LRU order otherwise."""

import asyncio

import pytest

from server.engine.residency import AdapterResidency
from adapters.errors import WorkerUnavailableError
from server.metrics import GatewayMetrics


class RecordingWorker:
    def __init__(self):
        self.loaded: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    async def load_lora(self, name, path):
        self.calls.append(("load", name))
        await asyncio.sleep(0.05)  # a load takes time: concurrent users must wait for it
        self.loaded.add(name)

    async def unload_lora(self, name):
        self.calls.append(("unload", name))
        self.loaded.discard(name)


async def _path():
    return "/dev/null"


def make(slots=2, wait_s=0.3):
    worker = RecordingWorker()
    return worker, AdapterResidency("w", worker, slots=slots, slot_wait_s=wait_s, metrics=GatewayMetrics(10))


async def test_concurrent_first_uses_load_once_and_only_use_a_loaded_adapter():
    worker, residency = make()

    async def request():
        async with residency.use("a", _path):
            assert "a" in worker.loaded  # never used before the worker has it

    await asyncio.gather(*(request() for _ in range(10)))
    assert worker.calls == [("load", "a")]


async def test_lru_eviction_skips_busy_adapters():
    worker, residency = make(slots=2)
    async with residency.use("a", _path):  # "a" stays busy throughout
        async with residency.use("b", _path):
            pass
        async with residency.use("c", _path):  # evicts idle "b", not the older but busy "a"
            pass
    assert ("unload", "b") in worker.calls and ("unload", "a") not in worker.calls
    assert residency.resident == ["a", "c"]


async def test_all_slots_busy_waits_then_fails_clearly():
    worker, residency = make(slots=1, wait_s=0.2)
    async with residency.use("a", _path):
        with pytest.raises(WorkerUnavailableError) as e:
            async with residency.use("b", _path):
                pass
    assert e.value.code == "adapter_slots_busy"


async def test_remove_waits_for_requests_in_flight():
    worker, residency = make()
    order = []

    async def long_request():
        async with residency.use("a", _path):
            await asyncio.sleep(0.1)
            order.append("request done")

    task = asyncio.create_task(long_request())
    await asyncio.sleep(0.07)
    await residency.remove("a", wait_s=5)
    order.append("removed")
    await task
    assert order == ["request done", "removed"] and "a" not in worker.loaded
