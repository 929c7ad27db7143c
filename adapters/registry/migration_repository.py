"""Queries and writes for base-model migration jobs. Every change of where an adapter is served
happens here, in one transaction with the job record that explains it."""

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from adapters.registry.public_ids import new_id
from adapters.registry.database import serialize_on
from adapters.registry.models import (ACTIVE_MIGRATION_STATES, Adapter, AdapterStatus, BaseVersion, ItemState,
                                      MigrationItem, MigrationJob, MigrationStatus, utcnow)
from adapters.registry.repository import Repository
from adapters.errors import ConflictError, NotFoundError


def _verdict(job: MigrationJob, item: MigrationItem) -> dict:
    """What an adapter's metadata says about its latest migration."""
    return {"job": job.id, "from": job.from_version.ref, "to": job.to_version.ref, "decision": item.decision,
            "reasons": item.reasons, "evidence": item.evidence, "state": item.state.value,
            "at": utcnow().isoformat()}


class MigrationRepository(Repository):

    def _job_query(self):
        version = (joinedload(MigrationJob.from_version).joinedload(BaseVersion.base_model),
                   joinedload(MigrationJob.to_version).joinedload(BaseVersion.base_model))
        adapter = selectinload(MigrationJob.items).joinedload(MigrationItem.adapter)
        return select(MigrationJob).options(
            *version, adapter.joinedload(Adapter.tenant),
            adapter.joinedload(Adapter.base_version).joinedload(BaseVersion.base_model))

    def create_job(self, from_version: BaseVersion, to_version: BaseVersion, adapter_ids: list[int], *,
                   thresholds: dict, selection: dict | None, skipped: list[dict]) -> MigrationJob:
        """One transaction: refuse adapters another active job holds, then write job and items."""
        with self.session() as s:
            serialize_on(s, "migration-jobs")  # two jobs created at once cannot both take an adapter
            busy = self._busy_item(s, adapter_ids)
            if busy is not None:
                name, version, job_id = busy
                raise ConflictError(f"adapter {name}@{version} is already in migration job {job_id}, which has not "
                                    "finished; wait for it or cancel it", code="adapter_in_running_migration")
            job = MigrationJob(id=new_id("mig"), from_version_id=from_version.id, to_version_id=to_version.id,
                               status=MigrationStatus.queued, thresholds=thresholds, selection=selection,
                               skipped=skipped)
            s.add(job)
            s.add_all(MigrationItem(job_id=job.id, adapter_id=a, state=ItemState.pending, reasons=[])
                      for a in adapter_ids)
            s.flush()
            job_id = job.id
        return self.get_job(job_id)

    @staticmethod
    def _busy_item(s: Session, adapter_ids: list[int]):
        """(name, version, job id) of one of these adapters that an active job holds, or None."""
        return s.execute(select(Adapter.name, Adapter.version, MigrationJob.id).select_from(MigrationItem)
                         .join(MigrationJob).join(Adapter)
                         .where(MigrationJob.status.in_(ACTIVE_MIGRATION_STATES),
                                MigrationItem.adapter_id.in_(adapter_ids))).first()

    def get_job(self, job_id: str) -> MigrationJob:
        with self.session() as s:
            job = s.scalar(self._job_query().where(MigrationJob.id == job_id))
        if job is None:
            raise NotFoundError(f"migration job {job_id!r} does not exist", code="migration_not_found")
        return job

    def list_jobs(self) -> list[MigrationJob]:
        with self.session() as s:
            return list(s.scalars(self._job_query().order_by(MigrationJob.created_at.desc())))

    def jobs_in(self, *statuses: MigrationStatus) -> list[MigrationJob]:
        with self.session() as s:
            return list(s.scalars(self._job_query().where(MigrationJob.status.in_(statuses))
                                  .order_by(MigrationJob.created_at)))

    def update_job(self, job_id: str, **values) -> None:
        with self.session() as s:
            job = s.get(MigrationJob, job_id)
            for key, value in values.items():
                setattr(job, key, value)

    def request_cancel(self, job_id: str) -> MigrationJob:
        with self.session() as s:
            job = s.get(MigrationJob, job_id)
            if job is None:
                raise NotFoundError(f"migration job {job_id!r} does not exist", code="migration_not_found")
            if job.status not in ACTIVE_MIGRATION_STATES:
                raise ConflictError(f"migration job {job_id} is {job.status.value}; only a queued or running job "
                                    "can be cancelled", code="migration_not_active")
            if job.status == MigrationStatus.queued:
                job.status, job.finished_at = MigrationStatus.cancelled, utcnow()
            job.cancel_requested = True
        return self.get_job(job_id)

    def finish_item(self, item_id: int, decision: str, reasons: list[str], evidence: dict | None,
                    screening: dict | None = None) -> bool:
        """Record one adapter's verdict and, when it is ``migrated``, move the adapter to the new
        version in the same transaction: a crash leaves it either untouched or fully promoted.
        ``screening``: the trigger scan before promotion, recorded on the adapter under ``migration``.
        Returns whether the adapter moved."""
        with self.session() as s:
            item, job, adapter = self._item(s, item_id)
            if item.state != ItemState.pending:
                return False  # recorded by an earlier run of this job
            item.state, item.decision, item.reasons, item.evidence = ItemState.done, decision, reasons, evidence
            item.finished_at = utcnow()
            moved = decision == "migrated" and self._still_on(adapter, job.from_version_id)
            if moved:
                adapter.base_version_id = job.to_version_id
            adapter.migration = _verdict(job, item)
            if screening is not None:
                adapter.screening = {**(adapter.screening or {}), "migration": screening}
            return moved

    def skip_item(self, item_id: int, reason: str) -> None:
        with self.session() as s:
            item, job, adapter = self._item(s, item_id)
            item.state, item.reasons, item.finished_at = ItemState.skipped, [reason], utcnow()

    def still_migratable(self, item_id: int) -> str | None:
        """Why the item's adapter can no longer take part (deleted, pinned, moved), or None."""
        with self.session() as s:
            _, job, adapter = self._item(s, item_id)
            if adapter.status != AdapterStatus.ready:
                return f"the adapter is {adapter.status.value}"
            if adapter.pinned:
                return "its tenant pinned it to its base version"
            if adapter.base_version_id != job.from_version_id:
                return "it is no longer served on the job's old version"
            return None

    def roll_back(self, job_id: str) -> list[Adapter]:
        """One transaction: every adapter the job moved goes back to the old version (unless its
        tenant pinned or deleted it since); the job becomes ``rolled_back``."""
        with self.session() as s:
            job = s.get(MigrationJob, job_id, with_for_update=True)
            if job is None:
                raise NotFoundError(f"migration job {job_id!r} does not exist", code="migration_not_found")
            self.check_rollback(job)
            moved_back = []
            for item in job.items:
                if item.state != ItemState.done:
                    continue
                adapter = s.get(Adapter, item.adapter_id)
                if item.decision == "migrated" and adapter.base_version_id == job.to_version_id \
                        and not adapter.pinned:
                    adapter.base_version_id = job.from_version_id
                    moved_back.append(adapter)
                item.state = ItemState.rolled_back
                adapter.migration = _verdict(job, item)
            job.status, job.rolled_back_at = MigrationStatus.rolled_back, utcnow()
            return moved_back

    @staticmethod
    def check_rollback(job: MigrationJob) -> None:
        if job.status in ACTIVE_MIGRATION_STATES:
            raise ConflictError(f"migration job {job.id} is {job.status.value}; cancel it first, then roll "
                                "it back", code="migration_active")
        if job.status == MigrationStatus.rolled_back:
            raise ConflictError(f"migration job {job.id} was already rolled back", code="migration_rolled_back")

    def _item(self, s: Session, item_id: int) -> tuple[MigrationItem, MigrationJob, Adapter]:
        item = s.get(MigrationItem, item_id)
        job = s.scalar(self._job_query().where(MigrationJob.id == item.job_id))
        return item, job, s.get(Adapter, item.adapter_id)

    @staticmethod
    def _still_on(adapter: Adapter, version_id: int) -> bool:
        return adapter.status == AdapterStatus.ready and not adapter.pinned and adapter.base_version_id == version_id
