"""What a tenant decides about where its adapter is served: pin it to a base version (migration
jobs then leave it alone), unpin it, and give it the eval set that judges it in an upgrade."""

import asyncio
from collections.abc import Callable

from adapters.format.eval_set import check_scoring, parse_eval_set
from adapters.registration import AdapterRegistration
from adapters.registry.models import Adapter, AdapterStatus, Tenant
from adapters.registry.registry import Registry
from server.adapters_api.service import AdapterService
from server.engine.worker_reconciler import WorkerReconciler
from adapters.errors import InvalidRequestError


class AdapterPlacement:
    def __init__(self, registry: Registry, adapters: AdapterService, registration: AdapterRegistration,
                 served: WorkerReconciler, on_change: Callable[[], None]):
        self.registry = registry
        self.adapters = adapters
        self.registration = registration
        self.served = served
        self._on_change = on_change

    async def _ready_versions(self, tenant: Tenant, ref: str) -> list[Adapter]:
        rows = [a for a in await self.adapters.versions(tenant, ref) if a.status == AdapterStatus.ready]
        if not rows:
            raise InvalidRequestError(f"adapter {ref!r} has no ready version", code="adapter_not_ready")
        return rows

    async def pin(self, tenant: Tenant, ref: str, base_version: int | None) -> list[Adapter]:
        """Pin to the version it is served on now (default) or to the one it was trained on; the
        target's worker is ready before the adapter is mapped onto it."""
        rows = await self._ready_versions(tenant, ref)
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
        rows = await self._ready_versions(tenant, ref)
        await asyncio.to_thread(self.registry.set_pin, [a.id for a in rows], False)
        return await self._changed(rows)

    async def set_eval_set(self, tenant: Tenant, ref: str, raw: bytes, scoring: str) -> list[Adapter]:
        rows = await self._ready_versions(tenant, ref)
        items = parse_eval_set(raw)
        check_scoring(scoring)
        await asyncio.to_thread(self._store_eval_set, [a.id for a in rows], raw, scoring, len(items))
        await asyncio.to_thread(self.registration.lifecycle.release, {a.eval_set_sha256 for a in rows})
        return [await asyncio.to_thread(self.registry.get_adapter, a.id) for a in rows]

    def _store_eval_set(self, adapter_ids: list[int], raw: bytes, scoring: str, items: int) -> None:
        with self.registration.lifecycle.stored_bytes(raw) as (sha, _):
            self.registry.set_eval_set(adapter_ids, sha, scoring, items)

    async def _changed(self, rows: list[Adapter]) -> list[Adapter]:
        self._on_change()
        await self.served.reconcile()
        return [await asyncio.to_thread(self.registry.get_adapter, a.id) for a in rows]
