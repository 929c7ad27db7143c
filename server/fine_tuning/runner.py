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
        self.max_concurrent = max_concurrent
        self.max_per_tenant = max_per_tenant
        self.poll_s = poll_s
        self.event_every_s = event_every_s
        self._running: dict[str, asyncio.Task] = {}
        self._loop_task: asyncio.Task | None = None
        # One thread per running job relays its training process (never the default executor,
        # which every database call of the gateway shares).
        self._relays = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="training-relay")

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="fine-tuning runner")

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for task in self._running.values():
            task.cancel()
        self._relays.shutdown(wait=False)  # cancelled jobs' processes stop at their next step

    async def _loop(self) -> None:
        while True:
            try:
                await self._start_what_fits()
            except Exception:
                log.exception("fine-tuning scheduler failed; retrying")
            await asyncio.sleep(self.poll_s)

    async def _start_what_fits(self) -> None:
        """Claim free jobs (queued, or abandoned by a gateway that died) within this machine's
        limit and each tenant's limit, counted over every gateway."""
        self._running = {k: t for k, t in self._running.items() if not t.done()}
        for job_id in await asyncio.to_thread(self.leases.claimable_ids):
            if len(self._running) >= self.max_concurrent:
                return
            if job_id in self._running:
                continue
            job = await asyncio.to_thread(self.repo.get_job, job_id)
            cap = GroupCap("tenant_id", job.tenant_id, self.max_per_tenant)
            previous = await asyncio.to_thread(self.leases.claim, job_id, self.owner, self.lease_s, cap)
            if previous is None:
                continue  # another gateway was faster, or the tenant is at its limit
            if previous:
                await asyncio.to_thread(self.repo.add_event, job.id, "The gateway running this job stopped; the "
                                        "job resumes from its last checkpoint")
            self._running[job.id] = asyncio.create_task(self._run_holding_lease(job), name=f"job {job.id}")

    async def _run_holding_lease(self, job: FineTuningJob) -> None:
        lost = threading.Event()  # set when another gateway took the job: stop, write nothing
        work = asyncio.create_task(self._run(job, lost))
        await self.leases.hold(job.id, self.owner, self.lease_s, work, on_lost=lost.set)
        await work

    async def _run(self, job: FineTuningJob, lost: threading.Event) -> None:
        repo = self.repo
        if job.started_at is None:
            await asyncio.to_thread(repo.update_job, job.id, started_at=utcnow())
        await asyncio.to_thread(repo.add_event, job.id, "Training started")
        cancel = threading.Event()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._relays, self._train, job, cancel, lost)
            await self._register(job, result)
        except asyncio.CancelledError:  # server shutting down: the job resumes when claimed again
            cancel.set()
            raise
        except TrainingCancelled:
            if lost.is_set():
                return
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

    def _train(self, job: FineTuningJob, cancel: threading.Event, lost: threading.Event):
        config = TrainingConfig(**job.hyperparameters)
        base_dir = Path(job.base_version.path)
        training = self.service.read_file(job.tenant_id, job.training_file, "training_file")
        validation = (self.service.read_file(job.tenant_id, job.validation_file, "validation_file")
                      if job.validation_file else None)
        last_event, last_check = [0.0], [0.0]

        def on_progress(p) -> None:
            if lost.is_set():
                cancel.set()
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
            if lost.is_set():
                archive.unlink(missing_ok=True)
            elif not self.checkpoints.push(job.id, step, archive) and not lost.is_set():
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
