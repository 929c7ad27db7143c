"""Admin routes of base-model migrations: start, watch, report, cancel, roll back."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from migration.upgrade_jobs.report import report_html
from server.deps import AdminDep, MigrationsDep
from server.migrations_api.protocol import MigrationCreate, MigrationList, MigrationPublic

router = APIRouter(prefix="/admin/migrations", dependencies=[AdminDep])


async def _public(migrations, job_id: str) -> MigrationPublic:
    return MigrationPublic.of(await asyncio.to_thread(migrations.repo.get_job, job_id))


@router.post("", status_code=201)
async def create_migration(body: MigrationCreate, migrations: MigrationsDep) -> MigrationPublic:
    """Queue a job that moves the ready adapters of one base version (or a selection) to a newer one."""
    return MigrationPublic.of(await migrations.create(body))


@router.get("")
async def list_migrations(migrations: MigrationsDep) -> MigrationList:
    return MigrationList(data=[MigrationPublic.of(j) for j in await asyncio.to_thread(migrations.repo.list_jobs)])


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
    await asyncio.to_thread(migrations.repo.request_cancel, job_id)
    return await _public(migrations, job_id)


@router.post("/{job_id}/rollback")
async def rollback_migration(job_id: str, migrations: MigrationsDep) -> MigrationPublic:
    """Move every adapter the job promoted back to the old version, at once: the old worker is
    ready first, requests in flight finish where they started."""
    return MigrationPublic.of(await migrations.rollback(job_id))
