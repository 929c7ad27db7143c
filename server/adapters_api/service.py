"""Adapter upload, listing and deletion for one tenant, shared by /v1/adapters and /admin/."""

import asyncio
import logging
import shutil
from collections.abc import Callable

from fastapi import UploadFile

from adapters.registration import AdapterRegistration, AdapterSubmission
from adapters.registry.models import Adapter, AdapterStatus, Tenant
from adapters.registry.registry import Registry
from adapters.registry.names import split_ref
from adapters.storage.materialize import AdapterMaterializer
from server.adapters_api.intake import build_submission, upload_workspace
from server.adapters_api.live_check import LiveCheck
from server.workers.pool import WorkerPool
from adapters.errors import AdapterInvalidError, ConflictError, InvalidRequestError, NotFoundError, WorkerUnavailableError
from server.settings import UploadSettings

log = logging.getLogger(__name__)


class AdapterService:
    def __init__(self, uploads: UploadSettings, registry: Registry, registration: AdapterRegistration,
                 live_check: LiveCheck, pool: WorkerPool, materializer: AdapterMaterializer,
                 on_change: Callable[[], None], *, live_check_timeout_s: float, request_timeout_s: float):
        self.uploads = uploads
        self.live_check_timeout_s = live_check_timeout_s
        self.request_timeout_s = request_timeout_s  # how long a deleted adapter's requests may still run
        self.registry = registry
        self.registration = registration
        self.live_check = live_check
        self.pool = pool
        self.materializer = materializer
        self._on_change = on_change  # e.g. drop cached model-name resolutions
        self._clean_ups: set[asyncio.Task] = set()

    async def upload(self, tenant: Tenant, files: list[UploadFile], **fields) -> tuple[Adapter, bool]:
        """Validate, store and live-check an upload; returns (adapter, finished)."""
        async with upload_workspace(self.uploads) as workspace:
            submission = await build_submission(self.uploads, workspace, files, **fields)
            return await self.register(tenant, submission)

    async def register(self, tenant: Tenant, submission: AdapterSubmission,
                       training_metadata: dict | None = None) -> tuple[Adapter, bool]:
        """Static validation, storage, then the live check; returns (adapter, finished)."""
        adapter = await asyncio.to_thread(self.registration.register, tenant, submission, training_metadata)
        try:
            checked = await asyncio.wait_for(self.live_check.run(adapter), self.live_check_timeout_s)
        except (WorkerUnavailableError, asyncio.TimeoutError):
            self.live_check.schedule_pending()
            return await asyncio.to_thread(self.registry.get_adapter, adapter.id), False
        self._on_change()
        if checked.status == AdapterStatus.deleted:
            raise ConflictError(f"adapter {checked.name}@{checked.version} was deleted while its upload was being "
                                "checked", code="adapter_deleted")
        if checked.status == AdapterStatus.rejected:
            verdict = (checked.screening or {}).get("verdict") or {}
            refused = verdict.get("flagged") and verdict.get("action") == "refuse"
            raise AdapterInvalidError(f"adapter {checked.name}@{checked.version} was rejected: "
                                      f"{checked.status_reason}",
                                      code="screening_refused" if refused else "live_check_failed")
        return checked, True

    async def list_for(self, tenant: Tenant) -> list[Adapter]:
        return await asyncio.to_thread(self.registry.list_adapters, tenant.id, ready_only=False)

    async def versions(self, tenant: Tenant, name: str) -> list[Adapter]:
        base_name, version = split_ref(name)
        rows = await asyncio.to_thread(self.registry.list_adapters, tenant.id, ready_only=False, name=base_name)
        rows = [a for a in rows if version is None or a.version == version]
        if not rows:  # another tenant's adapter answers exactly like a missing one
            raise NotFoundError(f"adapter {name!r} does not exist", code="adapter_not_found", param="name")
        return rows

    async def ready_versions(self, tenant: Tenant, ref: str) -> list[Adapter]:
        """The ready versions ``ref`` names (all of ``name``, or ``name@version``); 400 if none."""
        rows = [a for a in await self.versions(tenant, ref) if a.status == AdapterStatus.ready]
        if not rows:
            raise InvalidRequestError(f"adapter {ref!r} has no ready version", code="adapter_not_ready")
        return rows

    async def delete(self, tenant: Tenant, ref: str) -> list[Adapter]:
        """Delete ``name`` (every version) or ``name@v``: answered at once, and new requests get
        404 at once; in the background, requests in flight finish, then the adapter is unloaded and
        unshared blobs are removed."""
        await self.versions(tenant, ref)
        name, version = split_ref(ref)
        deleted = await asyncio.to_thread(self.registry.mark_deleted, tenant.id, name, version)
        self._on_change()
        for adapter in deleted:
            task = asyncio.create_task(self._clean_up(adapter), name=f"clean up adapter {adapter.id}")
            self._clean_ups.add(task)
            task.add_done_callback(self._clean_ups.discard)
        return deleted

    async def _clean_up(self, adapter: Adapter) -> None:
        try:
            for slot in self.pool.group(adapter.base_version.ref):
                try:
                    await slot.residency.remove(adapter.lora_name, self.request_timeout_s)
                except WorkerUnavailableError:
                    pass  # a restarting worker has no adapters loaded anyway
            await asyncio.to_thread(self.registration.release_blobs, adapter)
            folder = self.materializer.folder_path(adapter)
            if not await asyncio.to_thread(self.registration.lifecycle.references.referenced, adapter.weights_sha256):
                await asyncio.to_thread(shutil.rmtree, folder, True)
        except Exception:  # the row is deleted either way; what is left is only unreferenced storage
            log.exception("cleaning up deleted adapter %s failed", adapter.id)

    async def stop(self, wait_s: float = 5.0) -> None:
        """Give clean-ups in progress a moment, then cancel them (their blobs stay, unreferenced)."""
        if self._clean_ups:
            await asyncio.wait(list(self._clean_ups), timeout=wait_s)
        for task in list(self._clean_ups):
            task.cancel()
