"""FastAPI dependencies: each route asks for the services it uses (one dependency per
service, never the whole set) and for the caller's identity."""

import asyncio
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from adapters.registration import AdapterRegistration
from adapters.storage.blob_store import BlobStore
from server.adapters_api.eval_sets import EvalSets
from server.adapters_api.placement import AdapterPlacement
from server.adapters_api.service import AdapterService
from adapters.registry.models import Tenant
from adapters.registry.registry import Registry
from server.workers.pool import WorkerPool
from server.workers.worker_reconciler import WorkerReconciler
from server.files_api.service import FileService
from server.fine_tuning.job_runner import FineTuningRunner
from server.fine_tuning.service import FineTuningService
from adapters.errors import AuthenticationError
from server.metrics import GatewayMetrics
from server.migrations_api.service import MigrationService
from server.openai_api.serving import OpenAIServing
from server.settings import Settings
from server.ttl_cache import TtlCache

from migration.upgrade_jobs.runner import MigrationRunner


@dataclass
class Services:
    """Everything a request handler may use; built once per app by ``create_app``."""

    settings: Settings
    registry: Registry
    pool: WorkerPool
    serving: OpenAIServing
    registration: AdapterRegistration
    adapters: AdapterService
    blobs: BlobStore
    files: FileService
    fine_tuning: FineTuningService
    fine_tuning_runner: FineTuningRunner
    served: WorkerReconciler
    placement: AdapterPlacement
    eval_sets: EvalSets
    migrations: MigrationService
    migration_runner: MigrationRunner
    metrics: GatewayMetrics
    admin_key: str
    tenant_cache: TtlCache[str, Tenant]


def get_services(request: Request) -> Services:
    """For the app's own middleware; routes use the per-service dependencies below."""
    return request.app.state.services


def _service(name: str):
    def get(request: Request):
        return getattr(request.app.state.services, name)
    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(_service("settings"))]
RegistryDep = Annotated[Registry, Depends(_service("registry"))]
PoolDep = Annotated[WorkerPool, Depends(_service("pool"))]
ServingDep = Annotated[OpenAIServing, Depends(_service("serving"))]
RegistrationDep = Annotated[AdapterRegistration, Depends(_service("registration"))]
AdaptersDep = Annotated[AdapterService, Depends(_service("adapters"))]
FilesDep = Annotated[FileService, Depends(_service("files"))]
FineTuningDep = Annotated[FineTuningService, Depends(_service("fine_tuning"))]
ServedDep = Annotated[WorkerReconciler, Depends(_service("served"))]
PlacementDep = Annotated[AdapterPlacement, Depends(_service("placement"))]
EvalSetsDep = Annotated[EvalSets, Depends(_service("eval_sets"))]
MigrationsDep = Annotated[MigrationService, Depends(_service("migrations"))]
TenantCacheDep = Annotated[TtlCache, Depends(_service("tenant_cache"))]


MAX_KEY_CHARS = 256  # our keys are ~50 characters; a megabyte "key" is not looked up


def bearer_key(headers: Mapping[str, str]) -> str:
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
    if len(token) > MAX_KEY_CHARS or not token.isascii():
        raise AuthenticationError("Incorrect API key provided.")
    return token


async def tenant_for_headers(headers: Mapping[str, str], services: Services) -> Tenant:
    key = bearer_key(headers)
    tenant = services.tenant_cache.get(key)
    if tenant is None:
        generation = services.tenant_cache.generation
        tenant = await asyncio.to_thread(services.registry.tenant_for_key, key)
        if tenant is None:
            raise AuthenticationError("Incorrect API key provided.")
        services.tenant_cache.put(key, tenant, looked_up_in=generation)
    return tenant


def check_admin_headers(headers: Mapping[str, str], services: Services) -> None:
    key = bearer_key(headers)
    if not hmac.compare_digest(key.encode(), services.admin_key.encode()):
        raise AuthenticationError("This endpoint needs the admin key.")


async def get_tenant(request: Request) -> Tenant:
    tenant = getattr(request.state, "tenant", None)  # set by AuthenticateFirst from the same headers
    return tenant if tenant is not None else await tenant_for_headers(request.headers, get_services(request))


def require_admin(request: Request) -> None:
    check_admin_headers(request.headers, get_services(request))


TenantDep = Annotated[Tenant, Depends(get_tenant)]
AdminDep = Depends(require_admin)
