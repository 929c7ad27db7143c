"""Queries and writes for fine-tuning jobs and their events (their files: file_repository.py)."""

from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from adapters.registry.models import TERMINAL_JOB_STATES, BaseVersion, FineTuningEvent, FineTuningJob, JobStatus, utcnow
from adapters.registry.public_ids import new_id
from adapters.registry.repository import Repository
from adapters.errors import ConflictError, NotFoundError


class FineTuningRepository(Repository):

    # --- jobs -------------------------------------------------------------------------
    def _job_query(self):
        return select(FineTuningJob).options(
            joinedload(FineTuningJob.base_version).joinedload(BaseVersion.base_model),
            joinedload(FineTuningJob.tenant))

    def add_job(self, **fields) -> FineTuningJob:
        with self.session() as s:
            job = FineTuningJob(id=new_id("ftjob"), status=JobStatus.queued, **fields)
            s.add(job)
            s.flush()  # the event's foreign key needs the job row first
            s.add(FineTuningEvent(job_id=job.id, message="Fine-tuning job created; queued"))
        return self.get_job(job.id)

    def get_job(self, job_id: str, tenant_id: int | None = None) -> FineTuningJob:
        with self.session() as s:
            query = self._job_query().where(FineTuningJob.id == job_id)
            if tenant_id is not None:
                query = query.where(FineTuningJob.tenant_id == tenant_id)
            job = s.scalar(query)
        if job is None:
            raise NotFoundError(f"No such fine-tuning job: {job_id!r}", code="fine_tuning_job_not_found",
                                param="fine_tuning_job_id")
        return job

    def list_jobs(self, tenant_id: int) -> list[FineTuningJob]:
        with self.session() as s:
            return list(s.scalars(self._job_query().where(FineTuningJob.tenant_id == tenant_id)
                                  .order_by(FineTuningJob.created_at.desc())))

    def jobs_in(self, *statuses: JobStatus) -> list[FineTuningJob]:
        with self.session() as s:
            return list(s.scalars(self._job_query().where(FineTuningJob.status.in_(statuses))
                                  .order_by(FineTuningJob.created_at)))

    def update_job(self, job_id: str, **values) -> None:
        if values.get("status") in TERMINAL_JOB_STATES:
            values.setdefault("finished_at", utcnow())
        with self.session() as s:
            s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(**values))

    def request_cancel(self, job_id: str, tenant_id: int) -> FineTuningJob:
        job = self.get_job(job_id, tenant_id)
        if job.status not in TERMINAL_JOB_STATES:
            with self.session() as s:
                s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(cancel_requested=True))
                if job.status in (JobStatus.queued, JobStatus.validating_files, JobStatus.paused):
                    s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id)
                              .values(status=JobStatus.cancelled, finished_at=utcnow()))
                    s.add(FineTuningEvent(job_id=job_id, message="Job cancelled before it started"))
        return self.get_job(job_id)

    def request_pause(self, job_id: str, tenant_id: int) -> FineTuningJob:
        """A queued job is paused at once; a running one at its next step, after a checkpoint."""
        job = self.get_job(job_id, tenant_id)
        if job.status in TERMINAL_JOB_STATES:
            raise ConflictError(f"fine-tuning job {job_id} is {job.status.value}; only a queued or running job can "
                                "be paused", code="job_not_pausable")
        with self.session() as s:  # compare-and-set: a runner may claim the queued job meanwhile
            waiting = s.execute(update(FineTuningJob).where(
                FineTuningJob.id == job_id, FineTuningJob.status.in_((JobStatus.queued, JobStatus.validating_files)))
                .values(status=JobStatus.paused)).rowcount
            if waiting:
                s.add(FineTuningEvent(job_id=job_id, message="Job paused before it started"))
            else:
                s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id, FineTuningJob.status == JobStatus.running)
                          .values(pause_requested=True))
        return self.get_job(job_id)

    def request_resume(self, job_id: str, tenant_id: int) -> FineTuningJob:
        job = self.get_job(job_id, tenant_id)
        with self.session() as s:
            resumed = s.execute(update(FineTuningJob).where(
                FineTuningJob.id == job_id, FineTuningJob.status == JobStatus.paused)
                .values(status=JobStatus.queued, pause_requested=False, claimed_by=None)).rowcount
            if resumed:
                s.add(FineTuningEvent(job_id=job_id, message="Job resumed: it continues from its last checkpoint"))
        if not resumed and job.status != JobStatus.queued:
            raise ConflictError(f"fine-tuning job {job_id} is {job.status.value}; only a paused job can be resumed",
                                code="job_not_paused")
        return self.get_job(job_id)

    def add_event(self, job_id: str, message: str, *, level: str = "info", data: dict | None = None) -> None:
        with self.session() as s:
            s.add(FineTuningEvent(job_id=job_id, message=message, level=level, data=data))

    def events(self, job_id: str) -> list[FineTuningEvent]:
        with self.session() as s:
            return list(s.scalars(select(FineTuningEvent).where(FineTuningEvent.job_id == job_id)
                                  .order_by(FineTuningEvent.id.desc())))
