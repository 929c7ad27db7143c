"""The residency bookkeeping in isolation (a recording fake worker client; the real worker is
exercised by test_serving.py and test_fleet.py): one registration per cold adapter, no use
before it finished, no unloading to make room, a stale entry re-registered on the next use,
unloading only on deletion after the requests in flight."""

import asyncio

from server.workers.residency import AdapterResidency
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


def make():
    worker = RecordingWorker()
    return worker, AdapterResidency("w", worker, metrics=GatewayMetrics(10))


async def test_concurrent_first_uses_register_once_and_only_use_a_registered_adapter():
    worker, residency = make()

    async def request():
        async with residency.use("a", _path):
            assert "a" in worker.loaded  # never used before the worker has it

    await asyncio.gather(*(request() for _ in range(10)))
    assert worker.calls == [("load", "a")]


async def test_many_adapters_are_never_unloaded_to_make_room():
    """vLLM's own LRU keeps memory bounded; two gateways sharing a worker each registering
    their adapters must not unload the other's."""
    worker, residency = make()
    for name in [f"a{i}" for i in range(20)] * 2:
        async with residency.use(name, _path):
            pass
    assert [c for c in worker.calls if c[0] == "unload"] == []
    assert len([c for c in worker.calls if c[0] == "load"]) == 20


async def test_a_stale_entry_is_registered_again_even_while_in_use():
    """The worker answered 404 (it restarted, or another gateway deleted the adapter) while a
    request still holds it: the next request registers it again instead of failing on it."""
    worker, residency = make()
    async with residency.use("a", _path):
        worker.loaded.clear()  # the worker lost it
        residency.forget("a")
        async with residency.use("a", _path):
            assert "a" in worker.loaded
    assert worker.calls == [("load", "a"), ("load", "a")]
    async with residency.use("a", _path):
        pass
    assert len(worker.calls) == 2  # registered again once, then the fast path


async def test_a_worker_restart_with_requests_in_flight_keeps_counts_balanced():
    worker, residency = make()
    async with residency.use("a", _path):
        assert residency.reset(generation=1)  # the worker restarted under the request
        worker.loaded.clear()
    assert residency.resident == []
    async with residency.use("a", _path):  # registered on the new worker process
        pass
    assert residency.resident == ["a"] and worker.calls == [("load", "a"), ("load", "a")]


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
    assert order == ["request done", "removed"] and "a" not in worker.loaded and residency.resident == []
