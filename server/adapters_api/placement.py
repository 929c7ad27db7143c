"""Where a tenant's adapter is served: pin it to a base version (migration jobs then leave it
alone) or unpin it."""

import asyncio
from collections.abc import Callable

from adapters.registry.models import Adapter, Tenant
from adapters.registry.registry import Registry
from server.adapters_api.service import AdapterService
from server.workers.worker_reconciler import WorkerReconciler
from adapters.errors import InvalidRequestError


class AdapterPlacement:
    def __init__(self, registry: Registry, adapters: AdapterService, served: WorkerReconciler,
                 on_change: Callable[[], None]):
        self.registry = registry
        self.adapters = adapters
        self.served = served
        self._on_change = on_change

    async def pin(self, tenant: Tenant, ref: str, base_version: int | None) -> list[Adapter]:
        """Pin to the version it is served on now (default) or to the one it was trained on; the
        target's worker is ready before the adapter is mapped onto it."""
        rows = await self.adapters.ready_versions(tenant, ref)
        target = None
        if base_version is not None:
            for a in rows:
                allowed = {a.base_version.version, a.trained_base_version.version}
                if base_version not in allowed:
                    raise InvalidRequestError(
                        f"{a.name}@{a.version} can be pinned to base version {sorted(allowed)} (where it is served "
                        f"now or was trained), not {base_version}", code="invalid_pin_version", param="base_version")
            target = await asyncio.to_thread(self.registry.find_base_version, rows[0].base_version.base_model.name,
                                             base_version)
            await self.served.ready(target)
        await asyncio.to_thread(self.registry.set_pin, [a.id for a in rows], True, target.id if target else None)
        return await self._changed(rows)

    async def unpin(self, tenant: Tenant, ref: str) -> list[Adapter]:
        rows = await self.adapters.ready_versions(tenant, ref)
        await asyncio.to_thread(self.registry.set_pin, [a.id for a in rows], False)
        return await self._changed(rows)

    async def _changed(self, rows: list[Adapter]) -> list[Adapter]:
        self._on_change()
        await self.served.reconcile()
        return [await asyncio.to_thread(self.registry.get_adapter, a.id) for a in rows]
