"""Runs queued fine-tuning jobs in the background, within a global and a per-tenant limit.

State lives in the database: a job that was running when the server stopped is queued again
at start-up and resumes from its last checkpoint (its work folder survives). On success the
adapter goes through the same validation and live check as an upload.
"""

import asyncio
import logging
import threading
import time
from pathlib import Path

from adapters.registration import AdapterSubmission
from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.models import FineTuningJob, JobStatus, utcnow
from adapters.training.run import prepare, run_training
from adapters.training.trainer import TrainingCancelled
from adapters.training.config import TrainingConfig
from server.adapters_api.service import AdapterService
from server.errors import PeftServeError
from server.fine_tuning.service import FineTuningService

log = logging.getLogger(__name__)


def adapter_name(job: FineTuningJob) -> str:
    """OpenAI-style ``ft:<base>:<tenant>:<suffix>`` (the job id stands in for a missing suffix)."""
    return f"ft:{job.base_version.base_model.name}:{job.tenant.name}:{job.suffix or job.id.removeprefix('ftjob-')[:8]}"


class FineTuningRunner:
    def __init__(self, service: FineTuningService, adapters: AdapterService, *, max_concurrent: int,
                 max_per_tenant: int, poll_s: float = 1.0, event_every_s: float = 2.0):
        self.service = service
        self.repo: FineTuningRepository = service.repo
        self.adapters = adapters
        self.max_concurrent = max_concurrent
        self.max_per_tenant = max_per_tenant
        self.poll_s = poll_s
        self.event_every_s = event_every_s
        self._running: dict[str, asyncio.Task] = {}
        self._tenant_of: dict[str, int] = {}  # running job id -> tenant id
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        for job in await asyncio.to_thread(self.repo.jobs_in, JobStatus.running):
            await asyncio.to_thread(self.repo.update_job, job.id, status=JobStatus.queued)
            await asyncio.to_thread(self.repo.add_event, job.id, "Server restarted; the job resumes from its "
                                    "last checkpoint")
        self._loop_task = asyncio.create_task(self._loop(), name="fine-tuning runner")

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for task in self._running.values():
            task.cancel()

    async def _loop(self) -> None:
        while True:
            try:
                await self._start_what_fits()
            except Exception:
                log.exception("fine-tuning scheduler failed; retrying")
            await asyncio.sleep(self.poll_s)

    async def _start_what_fits(self) -> None:
        self._running = {k: t for k, t in self._running.items() if not t.done()}
        self._tenant_of = {k: v for k, v in self._tenant_of.items() if k in self._running}
        queued = await asyncio.to_thread(self.repo.jobs_in, JobStatus.queued)
        for job in queued:
            if len(self._running) >= self.max_concurrent:
                return
            if job.id in self._running:
                continue
            per_tenant = sum(1 for j in self._running if self._tenant_of.get(j) == job.tenant_id)
            if per_tenant >= self.max_per_tenant:
                continue
            self._tenant_of[job.id] = job.tenant_id
            self._running[job.id] = asyncio.create_task(self._run(job), name=f"job {job.id}")

    async def _run(self, job: FineTuningJob) -> None:
        repo = self.repo
        await asyncio.to_thread(repo.update_job, job.id, status=JobStatus.running, started_at=job.started_at or utcnow())
        await asyncio.to_thread(repo.add_event, job.id, "Training started")
        cancel = threading.Event()
        try:
            result = await asyncio.to_thread(self._train, job, cancel)
            await self._register(job, result)
        except asyncio.CancelledError:  # server shutting down: leave it running -> resumes at start-up
            cancel.set()
            raise
        except TrainingCancelled:
            await asyncio.to_thread(repo.update_job, job.id, status=JobStatus.cancelled)
            await asyncio.to_thread(repo.add_event, job.id, "Job cancelled")
        except PeftServeError as e:
            await self._fail(job, e.code, e.message)
        except Exception as e:  # a bug or a broken environment: say so, register nothing
            log.exception("fine-tuning job %s crashed", job.id)
            await self._fail(job, "internal_error", f"training failed: {type(e).__name__}: {e}")

    def _train(self, job: FineTuningJob, cancel: threading.Event):
        config = TrainingConfig(**job.hyperparameters)
        base_dir = Path(job.base_version.path)
        training = self.service.read_file(job.tenant_id, job.training_file, "training_file")
        validation = (self.service.read_file(job.tenant_id, job.validation_file, "validation_file")
                      if job.validation_file else None)
        data = prepare(base_dir, training, validation, config)
        last_event = [0.0]

        def on_progress(p) -> None:
            now = time.monotonic()
            if now - last_event[0] >= self.event_every_s or p.step == p.total_steps:
                last_event[0] = now
                self.repo.add_event(job.id, f"Step {p.step}/{p.total_steps}: training loss={p.loss:.4f}",
                                    data={"step": p.step, "total_steps": p.total_steps, "train_loss": p.loss,
                                          "eta_s": round(p.eta_s, 1)})
                if self.repo.get_job(job.id).cancel_requested:
                    cancel.set()

        work_dir = self.service.work_root / job.id
        result = run_training(base_dir, data, config, work_dir, on_progress=on_progress, cancel=cancel)
        tokens = sum(len(e.input_ids) for e in data.train) * config.n_epochs
        return result, tokens

    async def _register(self, job: FineTuningJob, trained) -> None:
        result, tokens = trained
        metadata = {"fine_tuning_job": job.id, **result.metadata}
        submission = AdapterSubmission(
            name=adapter_name(job), config_json=(result.adapter_dir / "adapter_config.json").read_bytes(),
            weights_path=result.adapter_dir / "adapter_model.safetensors", base_model=job.base_version.ref,
            description=f"fine-tuned by {job.id}", trained_with=result.metadata["method"],
            eval_set=result.eval_set or None, eval_scoring="exact_match")
        adapter, _ = await self.adapters.register(job.tenant, submission, training_metadata=metadata)
        await asyncio.to_thread(self.repo.update_job, job.id, status=JobStatus.succeeded,
                                fine_tuned_model=f"{adapter.name}@{adapter.version}" if adapter.version > 1
                                else adapter.name, trained_tokens=tokens)
        await asyncio.to_thread(self.repo.add_event, job.id, f"New fine-tuned model created: {adapter.name} "
                                f"(version {adapter.version}, {adapter.status.value})")

    async def _fail(self, job: FineTuningJob, code: str, message: str) -> None:
        await asyncio.to_thread(self.repo.update_job, job.id, status=JobStatus.failed,
                                error={"code": code, "message": message, "param": None})
        await asyncio.to_thread(self.repo.add_event, job.id, f"Job failed: {message}", level="error")
