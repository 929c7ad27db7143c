"""The workers of the gateway, one per served base version, each with its adapter residency."""

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from adapters.registry.models import BaseVersion
from server.engine.residency import AdapterResidency
from server.engine.worker_process import ExternalWorker, ManagedWorker
from server.errors import WorkerRetiredError, WorkerUnavailableError
from server.metrics import GatewayMetrics
from server.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class WorkerSlot:
    worker: ManagedWorker | ExternalWorker
    residency: AdapterResidency
    in_flight: int = 0  # requests being served; a retired worker stops once this reaches 0

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def drain_and_stop(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.worker.stop()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class WorkerPool:
    def __init__(self, settings: Settings, metrics: GatewayMetrics):
        self.settings = settings
        self.metrics = metrics
        self._slots: dict[str, WorkerSlot] = {}
        self._next_port = settings.worker_port_start
        self._retiring: set[asyncio.Task] = set()

    def _free_port(self) -> int:
        while not _port_is_free(self._next_port):
            self._next_port += 1
        self._next_port += 1
        return self._next_port - 1

    def ensure(self, base: BaseVersion) -> WorkerSlot:
        """Start serving ``base`` (idempotent); returns at once, the worker becomes ready later."""
        ref = base.ref
        if ref in self._slots:
            return self._slots[ref]
        if ref in self.settings.worker_urls:
            worker = ExternalWorker(ref, self.settings.worker_urls[ref], self.settings, self.metrics)
        else:
            worker = ManagedWorker(ref, base.path, self._free_port(), self.settings, self.metrics)
        residency = AdapterResidency(ref, worker.client, slots=self.settings.max_resident_adapters,
                                     slot_wait_s=self.settings.adapter_slot_wait_s, metrics=self.metrics)
        self._slots[ref] = slot = WorkerSlot(worker, residency)
        worker.start()
        return slot

    def ready_slot(self, ref: str) -> WorkerSlot:
        slot = self._slots.get(ref)
        if slot is None:
            raise WorkerRetiredError(f"no worker serves {ref} on this gateway")
        if not slot.worker.ready:
            raise WorkerUnavailableError(f"the worker for {ref} is {slot.worker.state.value}; retry shortly")
        slot.residency.reset(slot.worker.generation)
        return slot

    def retire_except(self, keep: set[str]) -> list[str]:
        """Stop serving every base version not in ``keep``: new requests no longer reach those
        workers at once; each stops once the requests in flight on it have finished."""
        retired = [ref for ref in self._slots if ref not in keep]
        for ref in retired:
            slot = self._slots.pop(ref)
            log.info("retiring the worker for %s (no adapter maps to it any more)", ref)
            task = asyncio.create_task(slot.drain_and_stop(self.settings.request_timeout_s), name=f"retire {ref}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return retired

    @property
    def slots(self) -> dict[str, WorkerSlot]:
        return dict(self._slots)

    @property
    def all_ready(self) -> bool:
        return bool(self._slots) and all(s.worker.ready for s in self._slots.values())

    async def wait_ready(self, timeout_s: float) -> bool:
        results = await asyncio.gather(*(s.worker.wait_ready(timeout_s) for s in self._slots.values()))
        return all(results)

    async def stop(self) -> None:
        await asyncio.gather(*(s.worker.stop() for s in self._slots.values()), *self._retiring)
        self._slots.clear()
