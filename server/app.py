"""The app factory: ``create_app(settings)`` builds the gateway with its own services."""

import asyncio
import logging
import os
import secrets
import shutil
import socket
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.registration import AdapterRegistration
from adapters.registry.adapter_quota import AdapterQuota
from adapters.registry.file_repository import FileRepository
from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.migration_repository import MigrationRepository
from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from adapters.registry.blob_references import BlobReferences
from adapters.storage.blob_lifecycle import BlobLifecycle
from adapters.storage.blob_store import BlobStore, LocalBlobStore
from adapters.storage.s3_blob_store import S3BlobStore
from adapters.storage.materialize import AdapterMaterializer
from server.adapters_api.api_router import router as adapters_router
from server.adapters_api.live_check import LiveCheck, LiveScreening
from server.console.router import router as console_router
from server.adapters_api.eval_sets import EvalSets
from server.adapters_api.placement import AdapterPlacement
from server.adapters_api.service import AdapterService
from server.admin.api_router import router as admin_router
from server.files_api.api_router import router as files_router
from server.fine_tuning.api_router import router as fine_tuning_router
from server.files_api.service import FileService
from server.fine_tuning.job_runner import FineTuningRunner
from server.fine_tuning.service import FineTuningService
from server.admin_key import load_or_create_admin_key
from server.authenticate_first import AuthenticateFirst
from server.deps import Services, require_admin
from migration.upgrade_jobs.adapter_trial import TrialSettings
from migration.upgrade_jobs.runner import MigrationRunner
from server.workers.pool import WorkerPool
from server.workers.worker_reconciler import WorkerReconciler
from server.errors import install_error_handlers
from server.metrics import GatewayMetrics, start_metrics_listener
from server.migrations_api.api_router import router as migrations_router
from server.migrations_api.service import MigrationService
from server.openai_api.api_router import router as openai_router
from server.openai_api.request_limits import RequestLimits, TenantConcurrency
from server.openai_api.serving import OpenAIServing
from server.request_size_limit import RequestSizeLimit
from server.settings import Settings
from server.ttl_cache import TtlCache

log = logging.getLogger(__name__)
READY_REGISTRY_TIMEOUT_S = 2.0


def make_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_store == "s3":
        import boto3

        client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region)
        return S3BlobStore(client, settings.s3_bucket, settings.s3_prefix, settings.data_dir / "blob-spool")
    return LocalBlobStore(settings.blob_dir)


async def keep_sweeping(lifecycle: BlobLifecycle, interval_s: float) -> None:
    """Collect orphan blobs (a crash between storing and referencing them) now and then."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(lifecycle.sweep)
        except Exception:
            log.exception("sweeping the blob store failed; trying again later")


def gateway_instance_name(settings: Settings) -> str:
    """Names this gateway process in the job leases it holds (unique across machines and restarts)."""
    return f"{socket.gethostname()}:{settings.port}:{os.getpid()}:{secrets.token_hex(3)}"


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url, settings.sqlite_synchronous)
    upgrade_schema(engine)
    sessions = make_session_factory(engine)
    registry = Registry(sessions)
    blobs = make_blob_store(settings)
    blobs.clear_temp()
    shutil.rmtree(settings.data_dir / "uploads", ignore_errors=True)  # spooled parts of uploads a crash cut off
    metrics = GatewayMetrics(settings.metrics_adapter_label_limit)
    pool = WorkerPool(settings.workers, metrics)
    materializer = AdapterMaterializer(blobs, settings.adapters_dir, workers_fetch=settings.workers_fetch_adapters)
    quota = AdapterQuota(max_adapters=settings.tenant_max_adapters, max_bytes=settings.tenant_max_bytes)
    served_targets = frozenset(settings.lora_target_modules)
    lifecycle = BlobLifecycle(blobs, BlobReferences(sessions), grace_s=settings.blob_grace_s)
    registration = AdapterRegistration(registry, lifecycle, max_rank=settings.max_lora_rank,
                                       served_targets=served_targets, quota=quota, screening=settings.screening)
    live_check = LiveCheck(registry, pool, materializer, registration, settings.worker_startup_timeout_s,
                           lease_s=settings.live_check_lease_s,
                           screening=LiveScreening(settings.screening, settings.migration_sample_prompts))
    limits = RequestLimits(max_choices=settings.request_max_choices,
                           max_generated_tokens=settings.request_max_generated_tokens,
                           context_tokens=settings.worker_max_model_len)
    serving = OpenAIServing(registry, pool, materializer, metrics, TtlCache(settings.lookup_cache_ttl_s), limits,
                            TenantConcurrency(settings.tenant_max_concurrent_requests))
    adapters = AdapterService(settings.uploads, registry, registration, live_check, pool, materializer,
                              on_change=serving.forget_resolutions, live_check_timeout_s=settings.live_check_timeout_s,
                              request_timeout_s=settings.request_timeout_s)
    files = FileService(FileRepository(sessions), lifecycle, settings.uploads)
    fine_tuning = FineTuningService(registry, FineTuningRepository(sessions), files, lifecycle,
                                    settings.data_dir / "fine_tuning",
                                    max_rank=settings.max_lora_rank, served_targets=served_targets,
                                    max_job_tokens=settings.fine_tuning_max_job_tokens)
    owner = gateway_instance_name(settings)
    runner = FineTuningRunner(fine_tuning, adapters, max_concurrent=settings.fine_tuning_max_concurrent,
                              max_per_tenant=settings.fine_tuning_max_per_tenant, owner=owner,
                              lease_s=settings.job_lease_s)
    served = WorkerReconciler(registry, pool, settings.worker_startup_timeout_s)
    placement = AdapterPlacement(registry, adapters, served, on_change=serving.forget_resolutions)
    migration_jobs = MigrationRepository(sessions)
    trial_settings = TrialSettings(
        sample_prompts=settings.migration_sample_prompts, max_tokens=settings.migration_eval_max_tokens,
        max_items=settings.migration_eval_max_items, concurrency=settings.migration_eval_concurrency,
        max_rank=settings.max_lora_rank, served_targets=served_targets, screening=settings.screening)
    migration_runner = MigrationRunner(migration_jobs, registry, served, blobs, materializer, trial_settings, metrics,
                                       owner=owner, lease_s=settings.job_lease_s,
                                       on_change=serving.forget_resolutions)
    return Services(
        settings=settings, registry=registry, pool=pool, metrics=metrics, serving=serving, registration=registration,
        adapters=adapters, blobs=blobs, files=files, fine_tuning=fine_tuning, fine_tuning_runner=runner, served=served,
        placement=placement, eval_sets=EvalSets(adapters, registry, lifecycle), migration_runner=migration_runner,
        migrations=MigrationService(migration_jobs, registry, pool, served, settings.migration_gate,
                                    on_change=serving.forget_resolutions),
        admin_key=load_or_create_admin_key(settings), tenant_cache=TtlCache(settings.lookup_cache_ttl_s))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for base in await asyncio.to_thread(services.registry.served_base_versions):
            services.pool.ensure(base)
        if not services.pool.groups:
            log.warning("no base model is registered: run `peftserve base import` first")
        services.adapters.live_check.schedule_pending()  # checks a crash or restart interrupted
        pending_checks = asyncio.create_task(services.adapters.live_check.keep_finishing(settings.reconcile_interval_s))
        await services.fine_tuning_runner.start()
        await services.migration_runner.start()
        reconciling = asyncio.create_task(services.served.keep_reconciled(settings.reconcile_interval_s))
        metrics_server = start_metrics_listener(settings.metrics_listen, services.metrics.registry)
        sweeping = asyncio.create_task(keep_sweeping(services.registration.lifecycle, settings.blob_sweep_interval_s))
        yield
        sweeping.cancel()
        pending_checks.cancel()
        if metrics_server is not None:
            metrics_server.shutdown()
        reconciling.cancel()
        await services.migration_runner.stop()
        await services.fine_tuning_runner.stop()
        await services.adapters.live_check.stop()
        await services.adapters.stop()
        await services.pool.stop()

    docs = {} if settings.api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="peftserve", version="0.1.0", lifespan=lifespan, **docs)
    app.state.services = services
    install_error_handlers(app, on_internal_error=lambda request: services.metrics.internal_errors.labels(
        request.method).inc())
    # A whole upload holds at most a few files of max_upload_bytes each (weights, config, eval set).
    app.add_middleware(RequestSizeLimit, max_bytes=3 * settings.max_upload_bytes + 1024 * 1024)
    app.add_middleware(AuthenticateFirst, services=services)  # added last: runs first
    app.include_router(openai_router)
    app.include_router(adapters_router)
    app.include_router(files_router)
    app.include_router(fine_tuning_router)
    app.include_router(admin_router)
    app.include_router(migrations_router)
    app.include_router(console_router)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict:
        """The gateway process is up (workers may still be starting)."""
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    async def ready(all: bool = False):
        """This gateway can take traffic: its registry answers and at least one worker is ready
        (or no base version is served yet). One base version's workers being down does not make
        every gateway unready (that would take the whole Service away, for a fleet-wide fault);
        its requests answer 503. ``?all=true``: every served base version has a ready worker."""
        workers = {s.name: s.worker.state.value for s in services.pool.all_slots}
        try:
            await asyncio.wait_for(asyncio.to_thread(services.registry.ping), READY_REGISTRY_TIMEOUT_S)
            registry_ok = True
        except Exception:  # any failure to reach it means: not ready
            registry_ok = False
        pool = services.pool
        workers_ok = pool.all_ready if all else (not pool.groups or any(pool.is_ready(r) for r in pool.groups))
        ok = registry_ok and workers_ok
        return JSONResponse({"ready": ok, "registry": registry_ok, "workers": workers},
                            status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_admin)])
    async def metrics() -> Response:
        """Needs the admin key: the labels name every tenant and adapter (or see metrics_listen)."""
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
