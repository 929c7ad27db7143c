"""Runs queued fine-tuning jobs in the background, within a global and a per-tenant limit.

State lives in the database and jobs are claimed through it (job_leases.py): a job whose
gateway stopped is taken over, by any gateway, once its lease runs out, and resumes from its
last checkpoint, which is kept in the blob store (checkpoints.py). On success the adapter goes
through the same validation and live check as an upload.
"""

import asyncio
import shutil
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adapters.registration import AdapterSubmission
from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.job_leases import GroupCap, JobLeases
from adapters.registry.job_loop import JobLoop
from adapters.registry.models import FineTuningJob, JobStatus, utcnow
from adapters.training.trainer import TrainingCancelled
from adapters.training.config import TrainingConfig
from server.adapters_api.service import AdapterService
from adapters.errors import PeftServeError
from server.fine_tuning.checkpoints import JobCheckpoints
from server.fine_tuning.service import FineTuningService
from server.fine_tuning.training_process import train_in_process

log = logging.getLogger(__name__)
CONTROL_CHECK_S = 0.5  # how often a running job looks for its tenant's cancel or pause (one row read)


def adapter_name(job: FineTuningJob) -> str:
    """OpenAI-style ``ft:<base>:<tenant>:<suffix>`` (the job id stands in for a missing suffix)."""
    return f"ft:{job.base_version.base_model.name}:{job.tenant.name}:{job.suffix or job.id.removeprefix('ftjob-')[:8]}"


class FineTuningRunner:
    def __init__(self, service: FineTuningService, adapters: AdapterService, *, max_concurrent: int,
                 max_per_tenant: int, owner: str, lease_s: float, poll_s: float = 1.0, event_every_s: float = 2.0):
        self.service = service
        self.repo: FineTuningRepository = service.repo
        self.leases = JobLeases(self.repo.sessions, FineTuningJob, queued=JobStatus.queued, running=JobStatus.running)
        self.owner = owner  # this gateway, as named in the leases it holds
        self.checkpoints = JobCheckpoints(service.lifecycle, self.leases, self.repo, owner)
        self.lease_s = lease_s
        self.adapters = adapters
        self.max_per_tenant = max_per_tenant
        self.event_every_s = event_every_s
        self.jobs = JobLoop(self.leases, kind="fine-tuning job", owner=owner, lease_s=lease_s, poll_s=poll_s,
                            capacity=max_concurrent, run=self._run_job, cap=self._tenant_cap,
                            on_takeover=self._taken_over)
        # One thread per running job relays its training process (never the default executor,
        # which every database call of the gateway shares).
        self._relays = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="training-relay")

    async def start(self) -> None:
        await self.jobs.start()

    async def stop(self) -> None:
        await self.jobs.stop()
        self._relays.shutdown(wait=False)  # cancelled jobs' processes stop at their next step

    async def _tenant_cap(self, job_id: str) -> GroupCap:
        """At most max_per_tenant running jobs per tenant, counted over every gateway."""
        job = await asyncio.to_thread(self.repo.get_job, job_id)
        return GroupCap("tenant_id", job.tenant_id, self.max_per_tenant)

    async def _taken_over(self, job_id: str, previous_owner: str) -> None:
        await asyncio.to_thread(self.repo.add_event, job_id, "The gateway running this job stopped; the "
                                "job resumes from its last checkpoint")

    async def _run_job(self, job_id: str) -> None:
        await self._run(await asyncio.to_thread(self.repo.get_job, job_id))

    async def _run(self, job: FineTuningJob) -> None:
        repo = self.repo
        if job.started_at is None:
            await asyncio.to_thread(repo.update_job, job.id, started_at=utcnow())
        await asyncio.to_thread(repo.add_event, job.id, "Training started")
        cancel = threading.Event()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._relays, self._train, job, cancel)
            await self._register(job, result)
        except asyncio.CancelledError:  # shutting down, or another gateway took the job: it resumes there
            cancel.set()
            raise
        except TrainingCancelled:
            now = await asyncio.to_thread(repo.get_job, job.id)
            if now.pause_requested and not now.cancel_requested:  # keep the work folder: resume continues it
                await asyncio.to_thread(self.leases.finish, job.id, self.owner, status=JobStatus.paused,
                                        pause_requested=False)
                await asyncio.to_thread(repo.add_event, job.id, "Job paused at its last checkpoint")
                return
            await self._finish(job, status=JobStatus.cancelled)
            await asyncio.to_thread(repo.add_event, job.id, "Job cancelled")
        except PeftServeError as e:
            await self._fail(job, e.code, e.message)
        except Exception as e:  # a bug or a broken environment: say so, register nothing
            log.exception("fine-tuning job %s crashed", job.id)
            await self._fail(job, "internal_error", f"training failed: {type(e).__name__}: {e}")
        # The job ended here (its adapter, if any, is in the blob store): checkpoints and optimizer
        # state are no longer needed. A job that is only interrupted keeps them to resume.
        await asyncio.to_thread(shutil.rmtree, self.service.work_root / job.id, True)
        await asyncio.to_thread(self.checkpoints.release_if_ended, job.id)

    async def _finish(self, job: FineTuningJob, **values) -> bool:
        return await asyncio.to_thread(self.leases.finish, job.id, self.owner, finished_at=utcnow(), **values)

    def _train(self, job: FineTuningJob, cancel: threading.Event):
        config = TrainingConfig(**job.hyperparameters)
        base_dir = Path(job.base_version.path)
        training = self.service.files.read(job.tenant_id, job.training_file, "training_file")
        validation = (self.service.files.read(job.tenant_id, job.validation_file, "validation_file")
                      if job.validation_file else None)
        last_event, last_check = [0.0], [0.0]

        def on_progress(p) -> None:
            now = time.monotonic()
            if now - last_event[0] >= self.event_every_s or p.step == p.total_steps:
                last_event[0] = now
                self.repo.add_event(job.id, f"Step {p.step}/{p.total_steps}: training loss={p.loss:.4f}",
                                    data={"step": p.step, "total_steps": p.total_steps, "train_loss": p.loss,
                                          "eta_s": round(p.eta_s, 1)})
            if now - last_check[0] >= CONTROL_CHECK_S:
                last_check[0] = now
                current = self.repo.get_job(job.id)
                if current.cancel_requested or current.pause_requested:  # both stop at a step, after a checkpoint
                    cancel.set()

        def on_checkpoint(step: int, archive: Path) -> None:
            if not self.checkpoints.push(job.id, step, archive) and not cancel.is_set():
                log.warning("job %s: checkpoint of step %d kept on this machine only", job.id, step)

        work_dir = self.service.work_root / job.id
        resumed = self.checkpoints.pull(job.id, work_dir)
        if resumed:
            self.repo.add_event(job.id, f"Resuming from the checkpoint at step {resumed}",
                                data={"resumed_from_step": resumed})
        init_adapter = self.service.write_starting_weights(job, work_dir / "starting-adapter")
        # Parsing, tokenizing and training run in a child process (training_process.py); this
        # thread, one of the runner's own, relays progress, checkpoints and cancellation.
        return train_in_process(base_dir, training, validation, config, work_dir, on_progress=on_progress,
                                cancel=cancel, init_adapter=init_adapter, on_checkpoint=on_checkpoint)

    async def _register(self, job: FineTuningJob, trained) -> None:
        result, tokens = trained
        metadata = {"fine_tuning_job": job.id, **result.metadata}
        submission = AdapterSubmission(
            name=adapter_name(job), config_json=(result.adapter_dir / "adapter_config.json").read_bytes(),
            weights_path=result.adapter_dir / "adapter_model.safetensors", base_model=job.base_version.ref,
            description=f"fine-tuned by {job.id}", trained_with=result.metadata["method"],
            eval_set=result.eval_set or None, eval_scoring="exact_match", fine_tuned=True)
        if not await asyncio.to_thread(self.leases.renew, job.id, self.owner, self.lease_s):
            return  # another gateway holds the job now and registers its own result
        adapter, _ = await self.adapters.register(job.tenant, submission, training_metadata=metadata)
        await self._finish(job, status=JobStatus.succeeded, trained_tokens=tokens,
                           fine_tuned_model=f"{adapter.name}@{adapter.version}" if adapter.version > 1 else adapter.name)
        await asyncio.to_thread(self.repo.add_event, job.id, f"New fine-tuned model created: {adapter.name} "
                                f"(version {adapter.version}, {adapter.status.value})")

    async def _fail(self, job: FineTuningJob, code: str, message: str) -> None:
        await self._finish(job, status=JobStatus.failed, error={"code": code, "message": message, "param": None})
        await asyncio.to_thread(self.repo.add_event, job.id, f"Job failed: {message}", level="error")
