"""Admin routes of base-model migrations: start, watch, report, cancel, roll back."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from migration.upgrade_jobs.planning import plan_job
from migration.upgrade_jobs.report import report_html
from server.deps import AdminDep, ServicesDep
from server.migrations_api.protocol import MigrationCreate, MigrationList, MigrationPublic

router = APIRouter(prefix="/admin/migrations", dependencies=[AdminDep])


async def _public(services, job_id: str) -> MigrationPublic:
    return MigrationPublic.of(await asyncio.to_thread(services.migrations.get_job, job_id))


@router.post("", status_code=201)
async def create_migration(body: MigrationCreate, services: ServicesDep) -> MigrationPublic:
    """Queue a job that moves the ready adapters of one base version (or a selection) to a newer one."""
    thresholds = body.thresholds or services.settings.migration_gate
    job = await asyncio.to_thread(
        plan_job, services.registry, services.migrations, base_model=body.base_model,
        from_version=body.from_version, to_version=body.to_version, tenants=body.tenants, adapters=body.adapters,
        thresholds=thresholds)
    for base in (job.from_version, job.to_version):  # start both workers now, not when the job runs
        services.pool.ensure(base)
    return MigrationPublic.of(job)


@router.get("")
async def list_migrations(services: ServicesDep) -> MigrationList:
    return MigrationList(data=[MigrationPublic.of(j) for j in await asyncio.to_thread(services.migrations.list_jobs)])


@router.get("/{job_id}")
async def get_migration(job_id: str, services: ServicesDep) -> MigrationPublic:
    return await _public(services, job_id)


@router.get("/{job_id}/report.html", response_class=HTMLResponse)
async def migration_report(job_id: str, services: ServicesDep) -> HTMLResponse:
    job = (await _public(services, job_id)).model_dump(mode="json")
    return HTMLResponse(await asyncio.to_thread(report_html, job))


@router.post("/{job_id}/cancel")
async def cancel_migration(job_id: str, services: ServicesDep) -> MigrationPublic:
    """Stop after the adapter in progress; adapters already moved stay moved (roll back to undo)."""
    await asyncio.to_thread(services.migrations.request_cancel, job_id)
    return await _public(services, job_id)


@router.post("/{job_id}/rollback")
async def rollback_migration(job_id: str, services: ServicesDep) -> MigrationPublic:
    """Move every adapter the job promoted back to the old version, at once: the old worker is
    ready first, requests in flight finish where they started."""
    job = await asyncio.to_thread(services.migrations.get_job, job_id)
    services.migrations.check_rollback(job)
    await services.served.ready(job.from_version)
    await asyncio.to_thread(services.migrations.roll_back, job_id)
    services.serving.forget_resolutions()
    await services.served.reconcile()
    return await _public(services, job_id)
