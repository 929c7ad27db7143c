"""Keep the running workers equal to the base versions the registry serves: the newest version
of every base, plus any older one an adapter is still mapped to."""

import asyncio

from adapters.registry.models import BaseVersion
from adapters.registry.repository import Registry
from server.engine.pool import WorkerPool, WorkerSlot
from server.errors import WorkerUnavailableError


class ServedVersions:
    def __init__(self, registry: Registry, pool: WorkerPool, startup_timeout_s: float):
        self.registry = registry
        self.pool = pool
        self.startup_timeout_s = startup_timeout_s

    async def ready(self, base: BaseVersion) -> WorkerSlot:
        """A ready worker for ``base``, started if needed; before anything is mapped onto it."""
        slot = self.pool.ensure(base)
        if not await slot.worker.wait_ready(self.startup_timeout_s):
            raise WorkerUnavailableError(f"the worker for {base.ref} did not become ready within "
                                         f"{self.startup_timeout_s:.0f}s; nothing was changed")
        return slot

    async def reconcile(self) -> list[str]:
        """Start what is served and retire what no longer is; returns the retired versions."""
        served = await asyncio.to_thread(self.registry.served_base_versions)
        for base in served:
            self.pool.ensure(base)
        return self.pool.retire_except({b.ref for b in served})
