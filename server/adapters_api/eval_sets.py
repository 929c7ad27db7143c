"""A tenant replaces the eval set that judges its adapter in a base upgrade (every ready version
``ref`` names); the old set's blob is released."""

import asyncio

from adapters.format.eval_set import check_scoring, parse_eval_set
from adapters.registry.adapter_repository import AdapterRepository
from adapters.registry.models import Adapter, Tenant
from adapters.storage.blob_lifecycle import BlobLifecycle
from server.adapters_api.service import AdapterService


class EvalSets:
    def __init__(self, adapters: AdapterService, repo: AdapterRepository, lifecycle: BlobLifecycle):
        self.adapters = adapters
        self.repo = repo
        self.lifecycle = lifecycle

    async def replace(self, tenant: Tenant, ref: str, raw: bytes, scoring: str) -> list[Adapter]:
        rows = await self.adapters.ready_versions(tenant, ref)
        items = parse_eval_set(raw)
        check_scoring(scoring)
        await asyncio.to_thread(self._store, [a.id for a in rows], raw, scoring, len(items))
        await asyncio.to_thread(self.lifecycle.release, {a.eval_set_sha256 for a in rows})
        return [await asyncio.to_thread(self.repo.get_adapter, a.id) for a in rows]

    def _store(self, adapter_ids: list[int], raw: bytes, scoring: str, items: int) -> None:
        with self.lifecycle.stored_bytes(raw) as (sha, _):
            self.repo.set_eval_set(adapter_ids, sha, scoring, items)
