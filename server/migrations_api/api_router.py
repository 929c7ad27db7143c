"""Admin routes of base-model migrations: start, watch, report, cancel, roll back."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from migration.upgrade_jobs.planning import plan_job
from migration.upgrade_jobs.report import report_html
from server.deps import AdminDep, MigrationsDep, PoolDep, RegistryDep, ServedDep, ServingDep, SettingsDep
from server.migrations_api.protocol import MigrationCreate, MigrationList, MigrationPublic

router = APIRouter(prefix="/admin/migrations", dependencies=[AdminDep])


async def _public(migrations, job_id: str) -> MigrationPublic:
    return MigrationPublic.of(await asyncio.to_thread(migrations.get_job, job_id))


@router.post("", status_code=201)
async def create_migration(body: MigrationCreate, migrations: MigrationsDep, pool: PoolDep, registry: RegistryDep,
                           settings: SettingsDep) -> MigrationPublic:
    """Queue a job that moves the ready adapters of one base version (or a selection) to a newer one."""
    thresholds = body.thresholds or settings.migration_gate
    job = await asyncio.to_thread(
        plan_job, registry, migrations, base_model=body.base_model,
        from_version=body.from_version, to_version=body.to_version, tenants=body.tenants, adapters=body.adapters,
        thresholds=thresholds)
    for base in (job.from_version, job.to_version):  # start both workers now, not when the job runs
        pool.ensure(base)
    return MigrationPublic.of(job)


@router.get("")
async def list_migrations(migrations: MigrationsDep) -> MigrationList:
    return MigrationList(data=[MigrationPublic.of(j) for j in await asyncio.to_thread(migrations.list_jobs)])


@router.get("/{job_id}")
async def get_migration(job_id: str, migrations: MigrationsDep) -> MigrationPublic:
    return await _public(migrations, job_id)


@router.get("/{job_id}/report.html", response_class=HTMLResponse)
async def migration_report(job_id: str, migrations: MigrationsDep) -> HTMLResponse:
    job = (await _public(migrations, job_id)).model_dump(mode="json")
    return HTMLResponse(await asyncio.to_thread(report_html, job))


@router.post("/{job_id}/cancel")
async def cancel_migration(job_id: str, migrations: MigrationsDep) -> MigrationPublic:
    """Stop after the adapter in progress; adapters already moved stay moved (roll back to undo)."""
    await asyncio.to_thread(migrations.request_cancel, job_id)
    return await _public(migrations, job_id)


@router.post("/{job_id}/rollback")
async def rollback_migration(job_id: str, migrations: MigrationsDep, served: ServedDep,
                             serving: ServingDep) -> MigrationPublic:
    """Move every adapter the job promoted back to the old version, at once: the old worker is
    ready first, requests in flight finish where they started."""
    job = await asyncio.to_thread(migrations.get_job, job_id)
    migrations.check_rollback(job)
    await served.ready(job.from_version)
    await asyncio.to_thread(migrations.roll_back, job_id)
    serving.forget_resolutions()
    await served.reconcile()
    return await _public(migrations, job_id)
