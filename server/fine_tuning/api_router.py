"""/v1/fine_tuning/jobs: OpenAI's fine-tuning API, training LoRA or Trans-PEFT adapters."""

import asyncio

from fastapi import APIRouter

from server.deps import FineTuningDep, TenantDep
from server.list_envelope import page_after
from server.fine_tuning.protocol import (CheckpointList, CheckpointObject, EventList, EventObject, JobCreate, JobList,
                                        JobObject)

router = APIRouter(prefix="/v1/fine_tuning/jobs")


@router.post("")
async def create_job(request: JobCreate, tenant: TenantDep, fine_tuning: FineTuningDep) -> JobObject:
    return JobObject.of(await fine_tuning.create(tenant, request))


@router.get("")
async def list_jobs(tenant: TenantDep, fine_tuning: FineTuningDep, limit: int = 20,
                    after: str | None = None) -> JobList:
    jobs, more = page_after(await asyncio.to_thread(fine_tuning.repo.list_jobs, tenant.id), after=after, limit=limit,
                            cursor=lambda j: j.id)
    return JobList(data=[JobObject.of(j) for j in jobs], has_more=more)


@router.get("/{job_id}")
async def retrieve_job(job_id: str, tenant: TenantDep, fine_tuning: FineTuningDep) -> JobObject:
    return JobObject.of(await asyncio.to_thread(fine_tuning.repo.get_job, job_id, tenant.id))


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: str, tenant: TenantDep, fine_tuning: FineTuningDep) -> JobObject:
    return JobObject.of(await asyncio.to_thread(fine_tuning.cancel, job_id, tenant.id))


@router.post("/{job_id}/pause")
async def pause_job(job_id: str, tenant: TenantDep, fine_tuning: FineTuningDep) -> JobObject:
    """A queued job pauses at once, a running one at its next step after saving a checkpoint."""
    return JobObject.of(await asyncio.to_thread(fine_tuning.repo.request_pause, job_id, tenant.id))


@router.post("/{job_id}/resume")
async def resume_job(job_id: str, tenant: TenantDep, fine_tuning: FineTuningDep) -> JobObject:
    """Queue a paused job again; it continues from its checkpoint (kept in the blob store, so any
    gateway may run it)."""
    return JobObject.of(await asyncio.to_thread(fine_tuning.repo.request_resume, job_id, tenant.id))


@router.get("/{job_id}/events")
async def list_events(job_id: str, tenant: TenantDep, fine_tuning: FineTuningDep, limit: int = 20,
                      after: str | None = None) -> EventList:
    await asyncio.to_thread(fine_tuning.repo.get_job, job_id, tenant.id)  # 404 for others' jobs
    events, more = page_after(await asyncio.to_thread(fine_tuning.repo.events, job_id), after=after, limit=limit,
                              cursor=EventObject.public_id)
    return EventList(data=[EventObject.of(e) for e in events], has_more=more)


@router.get("/{job_id}/checkpoints")
async def list_checkpoints(job_id: str, tenant: TenantDep, fine_tuning: FineTuningDep) -> CheckpointList:
    """The finished adapter as the job's checkpoint (OpenAI's shape); empty until it succeeded."""
    job = await asyncio.to_thread(fine_tuning.repo.get_job, job_id, tenant.id)  # 404 for others' jobs
    final = CheckpointObject.final(job, await asyncio.to_thread(fine_tuning.repo.events, job_id))
    data = [final] if final else []
    return CheckpointList(data=data, first_id=final.id if final else None, last_id=final.id if final else None)
