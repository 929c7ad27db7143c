"""Keep the running workers equal to the base versions the registry serves: the newest version
of every base, plus any older one an adapter is still mapped to."""

import asyncio
import logging

from adapters.registry.models import BaseVersion
from adapters.registry.base_version_repository import BaseVersionRepository
from server.workers.pool import WorkerPool
from adapters.errors import WorkerUnavailableError

log = logging.getLogger(__name__)


class WorkerReconciler:
    def __init__(self, registry: BaseVersionRepository, pool: WorkerPool, startup_timeout_s: float):
        self.registry = registry
        self.pool = pool
        self.startup_timeout_s = startup_timeout_s
        self._follow_up: asyncio.Task | None = None  # at most one: waits for starting workers, then reconciles
        self._lock = asyncio.Lock()  # one reconcile at a time: none retires what another just started

    def pick(self, base_ref: str, lora_name: str):
        """The worker live traffic for this adapter goes to (its home, with affinity routing)."""
        return self.pool.pick(base_ref, lora_name)

    async def ready(self, base: BaseVersion) -> None:
        """Wait until ``base`` has a ready worker (started if needed): before anything is mapped onto it."""
        await self.pool.ensure_ready(base, self.startup_timeout_s)
        if not self.pool.is_ready(base.ref):
            raise WorkerUnavailableError(f"no worker for {base.ref} became ready within "
                                         f"{self.startup_timeout_s:.0f}s; nothing was changed")

    async def keep_reconciled(self, interval_s: float) -> None:
        """Follow changes other gateways (or the offline CLI) made: new versions, migrations, deletions."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconciling the workers with the registry failed; retrying")

    async def reconcile(self) -> list[str]:
        """Start what is served and retire what no longer is; returns the retired versions.

        Until a new version's worker is ready, the newest ready version of that base keeps its
        worker (bare-base requests go there meanwhile); one follow-up pass retires it once the new
        worker is ready (or after the start-up timeout; the periodic pass goes on after that)."""
        async with self._lock:
            return await self._reconcile()

    async def _reconcile(self) -> list[str]:
        served = await asyncio.to_thread(self.registry.served_base_versions)
        keep = {b.ref for b in served}
        waiting = []
        for base in served:
            self.pool.ensure(base)
            if not self.pool.is_ready(base.ref):
                waiting.append(base)
                stand_in = self._newest_ready(base)
                if stand_in is not None:
                    keep.add(stand_in)
        if waiting and (self._follow_up is None or self._follow_up.done()):
            self._follow_up = asyncio.create_task(self._again_when_ready(waiting), name="reconcile workers")
        return self.pool.retire_except(keep)

    def _newest_ready(self, base: BaseVersion) -> str | None:
        name = base.base_model.name
        ready = [(int(ref.rsplit("@", 1)[1]), ref) for ref in self.pool.groups
                 if ref.rsplit("@", 1)[0] == name and self.pool.is_ready(ref)]
        return max(ready)[1] if ready else None

    async def _again_when_ready(self, bases: list[BaseVersion]) -> None:
        # Each wait is bounded by the start-up timeout; the pass below may schedule one more.
        results = await asyncio.gather(*(self.ready(base) for base in bases), return_exceptions=True)
        if all(isinstance(r, WorkerUnavailableError) for r in results):
            return  # none came up within the timeout: the periodic pass takes it from here
        async with self._lock:
            await self._reconcile()

    @property
    def follow_ups(self) -> int:
        return int(self._follow_up is not None and not self._follow_up.done())
