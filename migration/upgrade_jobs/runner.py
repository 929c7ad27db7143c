"""Runs migration jobs in the background, one at a time, durably.

All state is in the database: each adapter's verdict and, when it passed, its move to the new
version are one transaction (MigrationRepository.finish_item), so a job killed at any point
resumes at start-up with the adapters it had not finished; none is lost, judged twice or half
moved. Both versions stay served during the job; afterwards a worker nothing maps to retires.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from adapters.registry.migration_repository import MigrationRepository
from adapters.registry.models import ItemState, MigrationJob, MigrationStatus, utcnow
from adapters.registry.repository import Registry
from adapters.storage.blob_store import BlobStore
from adapters.storage.materialize import AdapterMaterializer
from migration.upgrade_jobs.adapter_trial import TrialSettings, try_adapter
from migration.validation_gate.gate import GateThresholds
from server.engine.served_versions import ServedVersions
from server.errors import PeftServeError, WorkerUnavailableError
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

WORKER_RETRIES = 3


class MigrationRunner:
    def __init__(self, repo: MigrationRepository, registry: Registry, served: ServedVersions, blobs: BlobStore,
                 materializer: AdapterMaterializer, trial_settings: TrialSettings, metrics: GatewayMetrics, *,
                 on_change: Callable[[], None], poll_s: float = 0.5):
        self.repo = repo
        self.metrics = metrics
        self.registry = registry
        self.served = served
        self.blobs = blobs
        self.materializer = materializer
        self.trial_settings = trial_settings
        self._on_change = on_change  # adapters moved: drop cached model-name resolutions
        self.poll_s = poll_s
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        for job in await asyncio.to_thread(self.repo.jobs_in, MigrationStatus.running):
            log.info("migration %s was running when the server stopped; it resumes", job.id)
            await asyncio.to_thread(self.repo.update_job, job.id, status=MigrationStatus.queued)
        self._task = asyncio.create_task(self._loop(), name="migration runner")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                queued = await asyncio.to_thread(self.repo.jobs_in, MigrationStatus.queued)
                if queued:
                    await self._run(queued[0])
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("migration scheduler failed; retrying")
            await asyncio.sleep(self.poll_s)

    async def _run(self, job: MigrationJob) -> None:
        await asyncio.to_thread(self.repo.update_job, job.id, status=MigrationStatus.running,
                                started_at=job.started_at or utcnow())
        thresholds = GateThresholds(**job.thresholds)
        try:
            status = MigrationStatus.succeeded
            for item in job.items:
                if item.state != ItemState.pending:
                    continue  # finished by an earlier run of this job
                if (await asyncio.to_thread(self.repo.get_job, job.id)).cancel_requested:
                    status = MigrationStatus.cancelled
                    break
                await self._migrate_item(job, item.id, item.adapter_id, thresholds)
            await asyncio.to_thread(self.repo.update_job, job.id, status=status, finished_at=utcnow())
        except asyncio.CancelledError:  # server shutting down: the job stays running and resumes
            raise
        except PeftServeError as e:
            await self._fail(job, e.code, e.message)
        except Exception as e:
            log.exception("migration %s crashed", job.id)
            await self._fail(job, "internal_error", f"{type(e).__name__}: {e}")
        finally:
            self._on_change()
            try:
                await self.served.reconcile()
            except Exception:  # never mask the job's own outcome
                log.exception("retiring unused workers after migration %s failed", job.id)

    async def _migrate_item(self, job: MigrationJob, item_id: int, adapter_id: int,
                            thresholds: GateThresholds) -> None:
        reason = await asyncio.to_thread(self.repo.still_migratable, item_id)
        if reason is not None:
            await asyncio.to_thread(self.repo.skip_item, item_id, reason)
            return
        adapter = await asyncio.to_thread(self.registry.get_adapter, adapter_id)
        started = time.perf_counter()
        for attempt in range(WORKER_RETRIES):
            try:
                old = await self._slot(job.from_version)
                new = await self._slot(job.to_version)
                verdict = await try_adapter(adapter, job.to_version, old, new, blobs=self.blobs,
                                            materializer=self.materializer, thresholds=thresholds,
                                            settings=self.trial_settings)
                break
            except WorkerUnavailableError:  # a worker restarted under us: wait for it, try again
                if attempt == WORKER_RETRIES - 1:
                    raise
        evidence = verdict.evidence.to_json() if verdict.evidence else None
        moved = await asyncio.to_thread(self.repo.finish_item, item_id, verdict.decision, verdict.reasons, evidence)
        self.metrics.migration_seconds.labels(job.to_version.ref).observe(time.perf_counter() - started)
        self.metrics.migration_decisions.labels(job.from_version.ref, job.to_version.ref, verdict.decision).inc()
        log.info("migration %s: %s/%s@%s %s%s", job.id, adapter.tenant.name, adapter.name, adapter.version,
                 verdict.decision, f" ({'; '.join(verdict.reasons)})" if verdict.reasons else "")
        if moved:
            self._on_change()

    async def _slot(self, base):
        await self.served.ready(base)
        return self.served.pool.ready_slot(base.ref)  # also resets residency after a worker restart

    async def _fail(self, job: MigrationJob, code: str, message: str) -> None:
        await asyncio.to_thread(self.repo.update_job, job.id, status=MigrationStatus.failed, finished_at=utcnow(),
                                error={"code": code, "message": message})
