"""Create, list and cancel fine-tuning jobs; every input is checked before a job exists."""

import asyncio
import shutil
from pathlib import Path

from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.models import TERMINAL_JOB_STATES, Adapter, BaseVersion, FineTuningJob, Tenant
from adapters.registry.registry import Registry
from adapters.registry.names import split_ref
from adapters.storage.blob_lifecycle import BlobLifecycle
from adapters.training.config import TrainingConfig
from adapters.training.pipeline import prepare
from adapters.training.trainer import total_steps
from adapters.errors import InvalidRequestError
from server.files_api.service import FileService
from server.fine_tuning.hyperparameters import training_config
from server.fine_tuning.protocol import JobCreate


class FineTuningService:
    def __init__(self, registry: Registry, repo: FineTuningRepository, files: FileService, lifecycle: BlobLifecycle,
                 work_root: Path, *, max_rank: int, served_targets: frozenset[str], max_job_tokens: int):
        # What the workers serve: a larger rank or another module would train, then be refused.
        self.max_rank = max_rank
        self.served_targets = served_targets
        self.max_job_tokens = max_job_tokens
        self.registry = registry
        self.repo = repo
        self.files = files
        self.lifecycle = lifecycle
        self.blobs = lifecycle.blobs
        self.work_root = work_root

    def _check_work(self, config: TrainingConfig, steps: int) -> None:
        work = steps * config.batch_size * config.max_seq_len
        if work > self.max_job_tokens:
            raise InvalidRequestError(
                f"this job asks for {steps} steps x batch_size {config.batch_size} x max_seq_len {config.max_seq_len} "
                f"= {work} tokens of training; at most {self.max_job_tokens} per job here (lower max_steps, n_epochs, "
                "batch_size or max_seq_len)", code="job_too_large", param="hyperparameters")

    def _starting_point(self, tenant: Tenant, model: str) -> tuple[BaseVersion, Adapter | None]:
        """``model`` names a base (train a new adapter) or one of the tenant's ready adapters
        (continue it, as OpenAI fine-tunes an ``ft:`` model): its base version and its weights."""
        name, version = split_ref(model)
        base = self.registry.find_base_version(name, version)
        if base is not None:
            return base, None
        adapter = self.registry.resolve_adapter(tenant.id, name, version)
        if adapter is None:
            raise InvalidRequestError(f"model {model!r} is not a base model or one of your ready adapters, so it "
                                      "cannot be fine-tuned", code="model_not_available", param="model")
        return adapter.base_version, adapter

    async def create(self, tenant: Tenant, request: JobCreate) -> FineTuningJob:
        base, start = await asyncio.to_thread(self._starting_point, tenant, request.model)
        inherit = None if start is None else {"rank": start.rank, "lora_alpha": start.lora_alpha,
                                              "target_modules": sorted(start.target_modules)}
        config = training_config(request.hyperparameters, request.method, request.seed, inherit)
        if start is not None:
            asked = (config.rank, config.lora_alpha, sorted(config.target_modules))
            if asked != (start.rank, start.lora_alpha, sorted(start.target_modules)):
                raise InvalidRequestError(
                    f"continuing {request.model!r} needs its rank {start.rank}, lora_alpha {start.lora_alpha:g} and "
                    f"target_modules {sorted(start.target_modules)}; the request asks for rank {config.rank}, "
                    f"lora_alpha {config.lora_alpha:g}, target_modules {sorted(config.target_modules)}",
                    code="invalid_hyperparameters", param="hyperparameters")
        if config.rank > self.max_rank:
            raise InvalidRequestError(f"hyperparameters.rank={config.rank} exceeds {self.max_rank}, the largest rank "
                                      "this server serves", code="invalid_hyperparameters", param="hyperparameters.rank")
        unserved = sorted(set(config.target_modules) - self.served_targets)
        if unserved:
            raise InvalidRequestError(f"hyperparameters.target_modules {unserved} are not served here; accepted: "
                                      f"{sorted(self.served_targets)}", code="invalid_hyperparameters",
                                      param="hyperparameters.target_modules")
        if config.max_steps is not None:  # known before reading the files
            self._check_work(config, config.max_steps)
        training = await asyncio.to_thread(self.files.read, tenant.id, request.training_file, "training_file")
        validation = None
        if request.validation_file:
            validation = await asyncio.to_thread(self.files.read, tenant.id, request.validation_file,
                                                 "validation_file")
        # Parse and tokenize now: a bad file is a 400 naming the line, not a failed job later.
        prepared = await asyncio.to_thread(prepare, Path(base.path), training, validation, config)
        self._check_work(config, total_steps(config, prepared.n_train))
        fields = dict(tenant_id=tenant.id, base_version_id=base.id, model=request.model,
                      training_file=request.training_file, validation_file=request.validation_file,
                      suffix=request.suffix, hyperparameters=config.model_dump())
        if start is None:
            return await asyncio.to_thread(self.repo.add_job, **fields)
        return await asyncio.to_thread(self._add_continuing_job, start, fields)

    def _add_continuing_job(self, start: Adapter, fields: dict) -> FineTuningJob:
        """The job references the starting weights until it ends, so deleting that adapter
        meanwhile cannot take them; the claim covers the insert itself (blob_references.py)."""
        claim = self.lifecycle.references.claim(start.weights_sha256)
        try:
            if not self.blobs.exists(start.weights_sha256):  # the adapter was deleted and its blob collected
                raise InvalidRequestError(f"adapter {fields['model']!r} was deleted while the job was being created",
                                          code="model_not_available", param="model")
            return self.repo.add_job(**fields, init_weights_sha256=start.weights_sha256)
        finally:
            self.lifecycle.references.unclaim(claim)

    def cancel(self, job_id: str, tenant_id: int) -> FineTuningJob:
        """A job that was not running (queued, paused) ends here and drops its checkpoint and this
        machine's work folder (a paused job's, when it paused here); a running one stops at its
        next step and its runner drops them."""
        job = self.repo.request_cancel(job_id, tenant_id)
        if job.status in TERMINAL_JOB_STATES:
            shutil.rmtree(self.work_root / job.id, ignore_errors=True)
            if job.checkpoint_sha256:
                self.lifecycle.release([job.checkpoint_sha256])
        return job

    def write_starting_weights(self, job: FineTuningJob, folder: Path) -> Path | None:
        """The weights a continuing job starts from, as a PEFT folder's weight file (None: a new adapter)."""
        if job.init_weights_sha256 is None:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        with self.blobs.open(job.init_weights_sha256) as f:
            (folder / "adapter_model.safetensors").write_bytes(f.read())
        return folder
