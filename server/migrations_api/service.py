"""Base-model migrations as the admin API asks for them: plan a job (and start both versions'
workers at once), and roll one back."""

import asyncio
from collections.abc import Callable

from adapters.registry.migration_repository import MigrationRepository
from adapters.registry.models import MigrationJob
from adapters.registry.registry import Registry
from migration.upgrade_jobs.planning import plan_job
from migration.validation_gate.gate import GateThresholds
from server.workers.pool import WorkerPool
from server.workers.worker_reconciler import WorkerReconciler
from server.migrations_api.protocol import MigrationCreate


class MigrationService:
    def __init__(self, repo: MigrationRepository, registry: Registry, pool: WorkerPool, served: WorkerReconciler,
                 default_thresholds: GateThresholds, on_change: Callable[[], None]):
        self.repo = repo
        self.registry = registry
        self.pool = pool
        self.served = served
        self.default_thresholds = default_thresholds
        self._on_change = on_change  # adapters moved back: drop cached model-name resolutions

    async def create(self, body: MigrationCreate) -> MigrationJob:
        job = await asyncio.to_thread(
            plan_job, self.registry, self.repo, base_model=body.base_model, from_version=body.from_version,
            to_version=body.to_version, tenants=body.tenants, adapters=body.adapters,
            thresholds=body.thresholds or self.default_thresholds)
        for base in (job.from_version, job.to_version):  # start both workers now, not when the job runs
            self.pool.ensure(base)
        return job

    async def rollback(self, job_id: str) -> MigrationJob:
        """Every adapter the job promoted back on the old version at once: the old worker is ready
        first; requests in flight finish where they started."""
        job = await asyncio.to_thread(self.repo.get_job, job_id)
        self.repo.check_rollback(job)
        await self.served.ready(job.from_version)
        await asyncio.to_thread(self.repo.roll_back, job_id)
        self._on_change()
        await self.served.reconcile()
        return await asyncio.to_thread(self.repo.get_job, job_id)
