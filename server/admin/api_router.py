"""Admin API under /admin/ (the CLI's back end): tenants, keys, base versions, adapters, workers."""

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Path as PathParam, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from adapters.registry.models import TERMINAL_JOB_STATES
from migration.compatibility.chart import report_chart_png
from migration.base_versions.importer import import_base
from migration.compatibility.compare_versions import compare_versions
from server.adapters_api.protocol import AdapterPublic
from server.admin.protocol import ApiKeyCreated, ApiKeyPublic, BaseImport, BaseVersionPublic, TenantCreate, TenantPublic, WorkerPublic
from server.deps import (AdaptersDep, AdminDep, FineTuningDep, PoolDep, RegistryDep, ServedDep, SettingsDep,
                         TenantCacheDep)
from adapters.errors import InvalidRequestError

router = APIRouter(prefix="/admin", dependencies=[AdminDep])
VersionQuery = Annotated[int, Query(ge=1, le=999_999_999)]  # within every database's integer


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantCreate, registry: RegistryDep) -> ApiKeyCreated:
    tenant, key = await asyncio.to_thread(registry.create_tenant, body.name)
    return ApiKeyCreated(tenant=tenant.name, api_key=key)


@router.get("/tenants")
async def list_tenants(registry: RegistryDep) -> list[TenantPublic]:
    return [_tenant_public(t) for t in await asyncio.to_thread(registry.list_tenants)]


@router.post("/tenants/{tenant}/disable")
async def disable_tenant(tenant: str, registry: RegistryDep, tenant_cache: TenantCacheDep,
                         fine_tuning: FineTuningDep) -> TenantPublic:
    """Refuse every key of the tenant (401), at once on this gateway, on others within the lookup
    cache's TTL, and cancel its queued and running fine-tuning jobs (a disabled tenant's work
    stops, wherever it runs); its adapters, files and finished jobs are kept (enable undoes the rest)."""
    row = await asyncio.to_thread(registry.set_tenant_disabled, tenant, True)
    tenant_cache.clear()
    await asyncio.to_thread(_cancel_jobs, fine_tuning, row.id)
    return _tenant_public(row)


def _cancel_jobs(fine_tuning, tenant_id: int) -> None:
    for job in fine_tuning.repo.list_jobs(tenant_id):
        if job.status not in TERMINAL_JOB_STATES:
            fine_tuning.cancel(job.id, tenant_id)


@router.post("/tenants/{tenant}/enable")
async def enable_tenant(tenant: str, registry: RegistryDep) -> TenantPublic:
    return _tenant_public(await asyncio.to_thread(registry.set_tenant_disabled, tenant, False))


def _tenant_public(t) -> TenantPublic:
    return TenantPublic(name=t.name, created_at=t.created_at, disabled_at=t.disabled_at)


@router.post("/tenants/{tenant}/keys", status_code=201)
async def create_key(tenant: str, registry: RegistryDep) -> ApiKeyCreated:
    key = await asyncio.to_thread(registry.create_api_key, tenant)
    return ApiKeyCreated(tenant=tenant, api_key=key)


@router.get("/tenants/{tenant}/keys")
async def list_keys(tenant: str, registry: RegistryDep) -> list[ApiKeyPublic]:
    return [_key_public(k) for k in await asyncio.to_thread(registry.list_api_keys, tenant)]


@router.delete("/tenants/{tenant}/keys/{key_id}")
async def revoke_key(tenant: str, key_id: Annotated[int, PathParam(ge=1, le=2**62)], registry: RegistryDep,
                     tenant_cache: TenantCacheDep) -> ApiKeyPublic:
    """Revoke a key: refused at once by this gateway, by others within the lookup cache's TTL
    (PEFTSERVE_LOOKUP_CACHE_TTL_S)."""
    key = await asyncio.to_thread(registry.revoke_api_key, tenant, key_id)
    tenant_cache.clear()  # the cache is keyed by the raw key, which is not stored: drop all
    return _key_public(key)


def _key_public(k) -> ApiKeyPublic:
    return ApiKeyPublic(id=k.id, prefix=k.prefix, created_at=k.created_at, revoked_at=k.revoked_at)


@router.get("/bases")
async def list_bases(registry: RegistryDep) -> list[BaseVersionPublic]:
    return [_base_public(v) for v in await asyncio.to_thread(registry.list_base_versions)]


def _base_public(v) -> BaseVersionPublic:
    return BaseVersionPublic(name=v.base_model.name, version=v.version, ref=v.ref, path=v.path,
                             fingerprint=v.fingerprint, source=v.source, created_at=v.created_at)


@router.post("/bases", status_code=201)
async def import_base_version(body: BaseImport, registry: RegistryDep, served: ServedDep,
                              settings: SettingsDep) -> BaseVersionPublic:
    """Import a base version from a path on the server; a newer version of an existing base must
    have the same architecture (else 400 with what differs). Its worker starts at once."""
    source = Path(body.source)
    if not source.exists():
        raise InvalidRequestError(f"source {body.source!r} does not exist on the server", param="source")
    v = await asyncio.to_thread(import_base, registry, settings.bases_dir, name=body.name,
                                source=source, version=body.version)
    await served.reconcile()
    return _base_public(v)


@router.get("/bases/{name}/compatibility")
async def base_compatibility(name: str, from_version: VersionQuery, to_version: VersionQuery, registry: RegistryDep,
                             format: str = "json"):
    """Relative weight change between two versions, per module, layer and group (JSON or PNG)."""
    report = await asyncio.to_thread(compare_versions, registry, name, from_version, to_version)
    if format == "png":
        return Response(await asyncio.to_thread(report_chart_png, report), media_type="image/png")
    return report


@router.post("/tenants/{tenant}/adapters")
async def add_adapter(
    tenant: str,
    adapters: AdaptersDep, registry: RegistryDep,
    name: Annotated[str, Form()],
    file: Annotated[list[UploadFile], File(description="adapter_config.json + adapter_model.safetensors, "
                                                       "or one .tar/.tar.gz/.zip archive")],
    base_model: Annotated[str | None, Form()] = None,
    description: Annotated[str, Form()] = "",
    trained_with: Annotated[str, Form()] = "unknown",
    eval_set: Annotated[UploadFile | None, File()] = None,
    eval_scoring: Annotated[str, Form()] = "exact_match",
):
    """Register an adapter for a tenant, through the same validation as tenant uploads."""
    owner = await asyncio.to_thread(registry.get_tenant, tenant)
    adapter, finished = await adapters.upload(
        owner, file, name=name, base_model=base_model, description=description, trained_with=trained_with,
        eval_set=eval_set, eval_scoring=eval_scoring)
    return JSONResponse(AdapterPublic.of(adapter).model_dump(mode="json"), status_code=201 if finished else 202)


@router.get("/tenants/{tenant}/adapters")
async def list_tenant_adapters(tenant: str, registry: RegistryDep) -> list[AdapterPublic]:
    owner = await asyncio.to_thread(registry.get_tenant, tenant)
    adapters = await asyncio.to_thread(registry.list_adapters, owner.id, ready_only=False)
    return [AdapterPublic.of(a) for a in adapters]


@router.get("/workers")
async def list_workers(pool: PoolDep) -> list[WorkerPublic]:
    return [WorkerPublic(name=s.name, base_version=s.base_ref, url=s.worker.client.url, state=s.worker.state.value,
                         external=s.worker.external, pid=s.worker.pid, restarts=s.worker.restarts,
                         in_flight=s.in_flight, resident_adapters=s.residency.resident,
                         log_path=str(s.worker.log_path) if s.worker.log_path else None)
            for s in pool.all_slots]
