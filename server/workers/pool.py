"""The workers of the gateway: for every served base version a group of one or more workers,
each with its own adapter residency, and the routing that picks one for each request.

Routing (``routing`` setting):
- ``affinity`` (default): each adapter has a small set of home workers (``adapter_home_workers``)
  chosen by rendezvous hashing of the adapter's name with each worker's URL, so every gateway
  agrees on them and an adapter stays resident where its requests go instead of thrashing
  every worker's slots. The least busy home serves; when every home is down or has
  ``worker_saturation`` requests in flight, the least busy ready worker of the group does.
- ``round_robin`` and ``least_loaded``: the baselines (what a plain load balancer does).
Bare-base requests always go to the least busy ready worker.
"""

import asyncio
import contextlib
import hashlib
import itertools
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from adapters.registry.models import BaseVersion
from server.workers.residency import AdapterResidency
from server.workers.worker_client import WorkerClient
from server.workers.worker_process import WORKER_BASE_NAME, ExternalWorker, ManagedWorker
from adapters.errors import WorkerRetiredError, WorkerUnavailableError
from server.metrics import GatewayMetrics
from server.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass
class PooledWorker:
    name: str  # "<base>@<version>#<n>": metrics and logs
    base_ref: str
    worker: ManagedWorker | ExternalWorker
    residency: AdapterResidency
    in_flight: int = 0  # requests being served; a retired worker stops once this reaches 0

    base_model_name = WORKER_BASE_NAME  # what the worker answers to without an adapter

    @property
    def client(self) -> WorkerClient:
        return self.worker.client

    def use_adapter(self, lora_name: str, path):
        """Holds the adapter resident for the block (see residency.py)."""
        return self.residency.use(lora_name, path)

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


def rendezvous_score(adapter: str, worker_url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{adapter}|{worker_url}".encode(), digest_size=8).digest(), "big")


class WorkerPool:
    def __init__(self, settings: WorkerSettings, metrics: GatewayMetrics):
        self.settings = settings
        self.metrics = metrics
        self._groups: dict[str, list[PooledWorker]] = {}
        self._next_port = settings.worker_port_start
        self._retiring: set[asyncio.Task] = set()
        self._round_robin = itertools.count()
        self._discovering: set[asyncio.Task] = set()

    def _free_port(self) -> int:
        while not _port_is_free(self._next_port):
            self._next_port += 1
        self._next_port += 1
        return self._next_port - 1

    def ensure(self, base: BaseVersion) -> list[PooledWorker]:
        """Start serving ``base`` (idempotent); returns at once, the workers become ready later."""
        ref = base.ref
        if ref in self._groups:
            return self._groups[ref]
        urls = self.settings.worker_urls.get(ref)
        if urls:
            workers = [ExternalWorker(f"{ref}#{i}", url, self.settings, self.metrics) for i, url in enumerate(urls)]
        else:
            workers = [ManagedWorker(f"{ref}#{i}", base.path, self._free_port(), self.settings, self.metrics)
                       for i in range(self.settings.workers_per_base)]
        group = []
        for worker in workers:
            residency = AdapterResidency(worker.name, worker.client, metrics=self.metrics,
                                         fetching=self.settings.workers_fetch_adapters)
            group.append(PooledWorker(worker.name, ref, worker, residency))
            worker.start()
        self._groups[ref] = group
        return group

    async def ensure_ready(self, base: BaseVersion, timeout_s: float) -> None:
        """Serve ``base`` if not yet, and wait up to ``timeout_s`` for one of its workers."""
        self.ensure(base)
        deadline = time.monotonic() + timeout_s
        while not self.is_ready(base.ref) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def group(self, ref: str) -> list[PooledWorker]:
        return list(self._groups.get(ref, ()))

    def is_ready(self, ref: str) -> bool:
        return any(s.worker.ready for s in self._groups.get(ref, ()))

    def check_served(self, ref: str) -> None:
        if ref not in self._groups:
            raise WorkerRetiredError(f"no worker serves {ref} on this gateway")

    def pick(self, ref: str, lora_name: str | None = None, avoid: frozenset[str] = frozenset()) -> PooledWorker:
        """The worker that serves the next request for ``ref`` (and adapter ``lora_name``); a
        retry names in ``avoid`` the workers that just failed it, used only when no other is ready."""
        group = self._groups.get(ref)
        if group is None:
            raise WorkerRetiredError(f"no worker serves {ref} on this gateway")
        ready = [s for s in group if s.worker.ready and s.name not in avoid] or [s for s in group if s.worker.ready]
        if not ready:
            states = ", ".join(sorted({s.worker.state.value for s in group}))
            raise WorkerUnavailableError(f"no worker for {ref} is ready ({states}); retry shortly")
        slot = self._route(group, ready, lora_name)
        if slot.residency.reset(slot.worker.generation):  # a (re)started worker: learn what it holds
            task = asyncio.create_task(self._discover(slot), name=f"discover {slot.name}")
            self._discovering.add(task)
            task.add_done_callback(self._discovering.discard)
        return slot

    def _route(self, group: list[PooledWorker], ready: list[PooledWorker], lora_name: str | None) -> PooledWorker:
        policy = self.settings.routing
        if lora_name is None or policy == "least_loaded" or len(group) == 1:
            return min(ready, key=lambda s: s.in_flight)
        if policy == "round_robin":
            return ready[next(self._round_robin) % len(ready)]
        ranked = sorted(group, key=lambda s: rendezvous_score(lora_name, s.worker.client.url), reverse=True)
        usable = {s.name for s in ready}
        homes = [s for s in ranked[:self.settings.adapter_home_workers]
                 if s.name in usable and s.in_flight < self.settings.worker_saturation]
        return min(homes or ready, key=lambda s: s.in_flight)

    async def _discover(self, slot: PooledWorker) -> None:
        """Adopt the adapters a worker already holds (loaded by another gateway, or before our
        restart), so they count as resident instead of being loaded again."""
        with contextlib.suppress(Exception):
            slot.residency.adopt(await slot.worker.client.loaded_loras())

    def retire_except(self, keep: set[str]) -> list[str]:
        """Stop serving every base version not in ``keep``: new requests no longer reach those
        workers at once; each stops once the requests in flight on it have finished."""
        retired = [ref for ref in self._groups if ref not in keep]
        for ref in retired:
            log.info("retiring the workers of %s (no adapter maps to it any more)", ref)
            for slot in self._groups.pop(ref):
                task = asyncio.create_task(slot.drain_and_stop(self.settings.request_timeout_s),
                                           name=f"retire {slot.name}")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        return retired

    @property
    def groups(self) -> dict[str, list[PooledWorker]]:
        return {ref: list(group) for ref, group in self._groups.items()}

    @property
    def all_slots(self) -> list[PooledWorker]:
        return [s for group in self._groups.values() for s in group]

    @property
    def all_ready(self) -> bool:
        """Every served base version has at least one ready worker."""
        return bool(self._groups) and all(self.is_ready(ref) for ref in self._groups)

    async def stop(self) -> None:
        await asyncio.gather(*(s.worker.stop() for s in self.all_slots), *self._retiring)
        self._groups.clear()
