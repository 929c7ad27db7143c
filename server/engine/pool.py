"""The workers of the gateway, one per served base version, each with its adapter residency."""

import asyncio
import socket
from dataclasses import dataclass

from adapters.registry.models import BaseVersion
from server.engine.residency import AdapterResidency
from server.engine.worker_process import ExternalWorker, ManagedWorker
from server.errors import WorkerUnavailableError
from server.metrics import GatewayMetrics
from server.settings import Settings


@dataclass
class WorkerSlot:
    worker: ManagedWorker | ExternalWorker
    residency: AdapterResidency


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class WorkerPool:
    def __init__(self, settings: Settings, metrics: GatewayMetrics):
        self.settings = settings
        self.metrics = metrics
        self._slots: dict[str, WorkerSlot] = {}
        self._next_port = settings.worker_port_start

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
        if slot is None or not slot.worker.ready:
            state = slot.worker.state.value if slot else "not started"
            raise WorkerUnavailableError(f"the worker for {ref} is {state}; retry shortly")
        slot.residency.reset(slot.worker.generation)
        return slot

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
        await asyncio.gather(*(s.worker.stop() for s in self._slots.values()))
        self._slots.clear()
