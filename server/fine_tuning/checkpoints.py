"""Fine-tuning checkpoints in the shared blob store, so a job taken over by a gateway on another
machine (or resumed after a pause there) continues from its last checkpoint instead of step 0.

The training child writes each checkpoint to its work folder and hands over a tar of it; ``push``
stores the tar and records it on the job, only while this gateway holds the job's lease, then
releases the checkpoint it replaces (old ones are pruned as new ones land). ``pull`` runs before
training starts: the work folder's own checkpoint is kept when it is at least as far as the
recorded one (same job, deterministic training: the same state), else the recorded one is fetched,
hash-verified, and unpacked over it. A job that ends releases its last checkpoint.
"""

import logging
from pathlib import Path

from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.job_leases import JobLeases
from adapters.registry.models import TERMINAL_JOB_STATES
from adapters.storage.blob_lifecycle import BlobLifecycle
from adapters.training.checkpoint_archive import checkpoint_step, unpack
from adapters.training.trainer import CHECKPOINT

log = logging.getLogger(__name__)


class JobCheckpoints:
    def __init__(self, lifecycle: BlobLifecycle, leases: JobLeases, repo: FineTuningRepository, owner: str):
        self.lifecycle = lifecycle
        self.leases = leases
        self.repo = repo
        self.owner = owner

    def push(self, job_id: str, step: int, archive: Path) -> bool:
        """Store the checkpoint and make it the job's; False (and nothing kept) if the job is no
        longer ours or the store failed: training goes on from the local copy either way."""
        try:
            previous = self.repo.get_job(job_id).checkpoint_sha256
            with self.lifecycle.stored_file(archive) as (sha, _):
                held = self.leases.write_if_held(job_id, self.owner, checkpoint_sha256=sha, checkpoint_step=step)
            # Ours: the checkpoint it replaces goes. Not ours any more: this one goes (if unreferenced).
            self.lifecycle.release([previous if held else sha])
        except Exception:  # the store is down: the next checkpoint tries again
            log.exception("job %s: storing the checkpoint of step %d failed", job_id, step)
            return False
        finally:
            archive.unlink(missing_ok=True)
        if held:
            self.repo.add_event(job_id, f"Checkpoint saved at step {step}", data={"checkpoint_step": step})
        return held

    def pull(self, job_id: str, work_dir: Path) -> int | None:
        """Bring the job's last checkpoint into ``work_dir``; the step training resumes from."""
        job = self.repo.get_job(job_id)  # read after the claim: what the previous holder last recorded
        local = checkpoint_step(work_dir / CHECKPOINT)
        if job.checkpoint_sha256 is None or (local is not None and local >= (job.checkpoint_step or 0)):
            return local
        work_dir.mkdir(parents=True, exist_ok=True)
        archive = work_dir / "checkpoint-fetched.tar"
        try:
            self.lifecycle.blobs.copy_to(job.checkpoint_sha256, archive)  # hash-verified on the way
            return unpack(archive, work_dir)
        except Exception as e:  # a damaged or missing checkpoint costs time, not the job
            log.exception("job %s: fetching checkpoint %s failed", job_id, job.checkpoint_sha256)
            self.repo.add_event(job_id, f"The checkpoint at step {job.checkpoint_step} could not be read "
                                f"({type(e).__name__}); training starts from "
                                f"{'step ' + str(local) if local else 'the beginning'}", level="warn")
            return local
        finally:
            archive.unlink(missing_ok=True)

    def release_if_ended(self, job_id: str) -> None:
        """Drop an ended job's last checkpoint from the store (a sweep would, later)."""
        job = self.repo.get_job(job_id)
        if job.status in TERMINAL_JOB_STATES and job.checkpoint_sha256:
            self.lifecycle.release([job.checkpoint_sha256])
