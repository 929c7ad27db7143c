"""Keep the running workers equal to the base versions the registry serves: the newest version
of every base, plus any older one an adapter is still mapped to."""

import asyncio
import logging

from adapters.registry.models import BaseVersion
from adapters.registry.repository import Registry
from server.engine.pool import WorkerPool
from adapters.errors import WorkerUnavailableError

log = logging.getLogger(__name__)


class ServedVersions:
    def __init__(self, registry: Registry, pool: WorkerPool, startup_timeout_s: float):
        self.registry = registry
        self.pool = pool
        self.startup_timeout_s = startup_timeout_s
        self._follow_ups: set[asyncio.Task] = set()

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
        worker (bare-base requests go there meanwhile); a later pass retires it."""
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
        if waiting:
            task = asyncio.create_task(self._again_when_ready(waiting), name="reconcile workers")
            self._follow_ups.add(task)
            task.add_done_callback(self._follow_ups.discard)
        return self.pool.retire_except(keep)

    def _newest_ready(self, base: BaseVersion) -> str | None:
        name = base.base_model.name
        ready = [(int(ref.rsplit("@", 1)[1]), ref) for ref in self.pool.groups
                 if ref.rsplit("@", 1)[0] == name and self.pool.is_ready(ref)]
        return max(ready)[1] if ready else None

    async def _again_when_ready(self, bases: list[BaseVersion]) -> None:
        try:
            for base in bases:
                await self.ready(base)
        except WorkerUnavailableError:
            pass  # try again below all the same: the next pass schedules another wait
        await self.reconcile()
