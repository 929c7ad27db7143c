"""Runs migration jobs in the background, one at a time, durably.

All state is in the database: each adapter's verdict and, when it passed, its move to the new
version are one transaction (MigrationRepository.finish_item), so a job killed at any point is
resumed, by this gateway after a restart or by another one, once its lease runs out, with the
adapters it had not finished; none is lost, judged twice or half moved. Both versions stay
served during the job; afterwards a worker nothing maps to retires.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from adapters.registry.job_leases import JobLeases
from adapters.registry.job_loop import JobLoop
from adapters.registry.migration_repository import MigrationRepository
from adapters.registry.models import ItemState, MigrationJob, MigrationStatus, utcnow
from adapters.registry.adapter_repository import AdapterRepository
from adapters.storage.blob_store import BlobStore
from adapters.storage.materialize import AdapterMaterializer
from migration.worker_port import MigrationMetrics, WorkerReconcilerPort, TrialWorker
from migration.upgrade_jobs.adapter_trial import TrialFailed, TrialSettings, try_adapter
from migration.validation_gate.gate import GateThresholds
from adapters.errors import PeftServeError, WorkerUnavailableError

log = logging.getLogger(__name__)

WORKER_RETRIES = 3
RETRY_PAUSE_S = 1.0


class MigrationRunner:
    def __init__(self, repo: MigrationRepository, registry: AdapterRepository, served: WorkerReconcilerPort, blobs: BlobStore,
                 materializer: AdapterMaterializer, trial_settings: TrialSettings, metrics: MigrationMetrics, *,
                 owner: str, lease_s: float, on_change: Callable[[], None], poll_s: float = 0.5):
        self.repo = repo
        self.leases = JobLeases(repo.sessions, MigrationJob, queued=MigrationStatus.queued,
                                running=MigrationStatus.running)
        self.owner = owner  # this gateway, as named in the leases it holds
        self.metrics = metrics
        self.registry = registry
        self.served = served
        self.blobs = blobs
        self.materializer = materializer
        self.trial_settings = trial_settings
        self._on_change = on_change  # adapters moved: drop cached model-name resolutions
        # One job at a time: jobs share the workers, and a second one would only slow the first.
        self.jobs = JobLoop(self.leases, kind="migration", owner=owner, lease_s=lease_s, poll_s=poll_s, capacity=1,
                            run=self._run_job)

    async def start(self) -> None:
        await self.jobs.start()

    async def stop(self) -> None:
        await self.jobs.stop()

    async def _run_job(self, job_id: str) -> None:
        await self._run(await asyncio.to_thread(self.repo.get_job, job_id))

    async def _run(self, job: MigrationJob) -> None:
        if job.started_at is None:
            await asyncio.to_thread(self.repo.update_job, job.id, started_at=utcnow())
        thresholds = GateThresholds(**job.thresholds)
        try:
            status = MigrationStatus.succeeded
            for item in job.items:
                if item.state != ItemState.pending:
                    continue  # finished by an earlier run of this job
                if (await asyncio.to_thread(self.repo.get_job, job.id)).cancel_requested:
                    status = MigrationStatus.cancelled
                    break
                await self._judge_item(job, item.id, item.adapter_id, thresholds)
            await self._finish(job, status=status)
        except asyncio.CancelledError:  # shutting down or lease lost: whoever claims it next resumes
            raise
        except PeftServeError as e:
            await self._finish(job, status=MigrationStatus.failed, error={"code": e.code, "message": e.message})
        except Exception as e:
            log.exception("migration %s crashed", job.id)
            await self._finish(job, status=MigrationStatus.failed,
                               error={"code": "internal_error", "message": f"{type(e).__name__}: {e}"})
        self._on_change()
        try:  # retire the old version's workers if nothing maps to them any more
            await self.served.reconcile()
        except Exception:  # never mask the job's own outcome
            log.exception("retiring unused workers after migration %s failed", job.id)

    async def _finish(self, job: MigrationJob, **values) -> None:
        await asyncio.to_thread(self.leases.finish, job.id, self.owner, finished_at=utcnow(), **values)

    async def _judge_item(self, job: MigrationJob, item_id: int, adapter_id: int,
                          thresholds: GateThresholds) -> None:
        """One adapter's trial; if it cannot be judged (a worker's failure, any bug), the adapter
        gets an ``error`` verdict with the reason and stays where it is, and the job goes on."""
        try:
            await self._migrate_item(job, item_id, adapter_id, thresholds)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, (TrialFailed, PeftServeError)):
                reason = str(e) if isinstance(e, TrialFailed) else e.message
            else:
                log.exception("migration %s: judging adapter %s crashed", job.id, adapter_id)
                reason = f"internal error: {type(e).__name__}"
            await asyncio.to_thread(self.repo.finish_item, item_id, "error", [reason], None)
            self.metrics.migration_decisions.labels(job.from_version.ref, job.to_version.ref, "error").inc()

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
                old = await self._slot(job.from_version, adapter.lora_name)
                new = await self._slot(job.to_version, adapter.lora_name)
                verdict = await try_adapter(adapter, job.to_version, old, new, blobs=self.blobs,
                                            materializer=self.materializer, thresholds=thresholds,
                                            settings=self.trial_settings)
                break
            except (WorkerUnavailableError, TrialFailed):  # a worker failed or restarted: wait, try again
                if attempt == WORKER_RETRIES - 1:
                    raise
                await asyncio.sleep(RETRY_PAUSE_S)
        evidence = verdict.evidence.to_json() if verdict.evidence else None
        if verdict.screening is not None:
            evidence = {**(evidence or {}), "screening": verdict.screening}
        moved = await asyncio.to_thread(self.repo.finish_item, item_id, verdict.decision, verdict.reasons, evidence,
                                        verdict.screening)
        self.metrics.migration_seconds.labels(job.to_version.ref).observe(time.perf_counter() - started)
        self.metrics.migration_decisions.labels(job.from_version.ref, job.to_version.ref, verdict.decision).inc()
        log.info("migration %s: %s/%s@%s %s%s", job.id, adapter.tenant.name, adapter.name, adapter.version,
                 verdict.decision, f" ({'; '.join(verdict.reasons)})" if verdict.reasons else "")
        if moved:
            self._on_change()

    async def _slot(self, base, lora_name: str) -> TrialWorker:
        await self.served.ready(base)
        return self.served.pick(base.ref, lora_name)  # the adapter's home worker, as for live traffic
