"""Admin API under /admin/ (the CLI's back end): tenants, keys, base versions, adapters, workers."""

import asyncio
import os
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from adapters.registration import AdapterSubmission
from server.admin.protocol import (AdapterPublic, ApiKeyCreated, BaseVersionPublic, TenantCreate, TenantPublic,
                                   WorkerPublic)
from server.deps import AdminDep, ServicesDep
from server.upload_spool import spool_to_disk

router = APIRouter(prefix="/admin", dependencies=[AdminDep])


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantCreate, services: ServicesDep) -> ApiKeyCreated:
    tenant, key = await asyncio.to_thread(services.registry.create_tenant, body.name)
    return ApiKeyCreated(tenant=tenant.name, api_key=key)


@router.get("/tenants")
async def list_tenants(services: ServicesDep) -> list[TenantPublic]:
    return [TenantPublic(name=t.name, created_at=t.created_at)
            for t in await asyncio.to_thread(services.registry.list_tenants)]


@router.post("/tenants/{tenant}/keys", status_code=201)
async def create_key(tenant: str, services: ServicesDep) -> ApiKeyCreated:
    key = await asyncio.to_thread(services.registry.create_api_key, tenant)
    return ApiKeyCreated(tenant=tenant, api_key=key)


@router.get("/bases")
async def list_bases(services: ServicesDep) -> list[BaseVersionPublic]:
    return [BaseVersionPublic(name=v.base_model.name, version=v.version, ref=v.ref, path=v.path,
                              fingerprint=v.fingerprint, source=v.source, created_at=v.created_at)
            for v in await asyncio.to_thread(services.registry.list_base_versions)]


@router.post("/tenants/{tenant}/adapters", status_code=201)
async def add_adapter(
    tenant: str,
    services: ServicesDep,
    name: Annotated[str, Form()],
    adapter_config: Annotated[UploadFile, File(description="adapter_config.json")],
    adapter_model: Annotated[UploadFile, File(description="adapter_model.safetensors")],
    base_model: Annotated[str | None, Form()] = None,
    description: Annotated[str, Form()] = "",
    trained_with: Annotated[str, Form()] = "unknown",
) -> AdapterPublic:
    """Register a PEFT LoRA folder's two files for a tenant, validated against the base."""
    owner = await asyncio.to_thread(services.registry.get_tenant, tenant)
    config_json = await adapter_config.read(64 * 1024 + 1)
    suffix = os.path.splitext(adapter_model.filename or "")[1]
    weights = await spool_to_disk(adapter_model, services.settings.data_dir / "uploads",
                                  limit=services.settings.max_upload_bytes, suffix=suffix)
    try:
        submission = AdapterSubmission(name=name, config_json=config_json, weights_path=weights,
                                       base_model=base_model, description=description, trained_with=trained_with)
        adapter = await asyncio.to_thread(services.registration.register, owner, submission)
    finally:
        weights.unlink(missing_ok=True)
    services.pool.ensure(adapter.base_version)
    return AdapterPublic.of(adapter)


@router.get("/tenants/{tenant}/adapters")
async def list_tenant_adapters(tenant: str, services: ServicesDep) -> list[AdapterPublic]:
    owner = await asyncio.to_thread(services.registry.get_tenant, tenant)
    adapters = await asyncio.to_thread(services.registry.list_adapters, owner.id, ready_only=False)
    return [AdapterPublic.of(a) for a in adapters]


@router.get("/workers")
async def list_workers(services: ServicesDep) -> list[WorkerPublic]:
    return [WorkerPublic(base_version=ref, url=s.worker.client.url, state=s.worker.state.value,
                         external=s.worker.external, pid=s.worker.pid, restarts=s.worker.restarts,
                         resident_adapters=s.residency.resident,
                         log_path=str(s.worker.log_path) if s.worker.log_path else None)
            for ref, s in services.pool.slots.items()]
