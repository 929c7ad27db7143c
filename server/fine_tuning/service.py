"""Create, list and cancel fine-tuning jobs; every input is checked before a job exists."""

import asyncio
from pathlib import Path

from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.models import FineTuningJob, Tenant
from adapters.registry.repository import Registry, split_ref
from adapters.storage.blob_store import BlobStore
from adapters.training.config import TrainingConfig
from adapters.training.run import prepare
from adapters.training.trainer import total_steps
from adapters.errors import InvalidRequestError
from server.fine_tuning.hyperparameters import training_config
from server.fine_tuning.protocol import JobCreate


class FineTuningService:
    def __init__(self, registry: Registry, repo: FineTuningRepository, blobs: BlobStore, work_root: Path, *,
                 max_rank: int, served_targets: frozenset[str], max_job_tokens: int):
        # What the workers serve: a larger rank or another module would train, then be refused.
        self.max_rank = max_rank
        self.served_targets = served_targets
        self.max_job_tokens = max_job_tokens
        self.registry = registry
        self.repo = repo
        self.blobs = blobs
        self.work_root = work_root

    def read_file(self, tenant_id: int, file_id: str, param: str) -> bytes:
        row = self.repo.get_file(tenant_id, file_id, param=param)
        with self.blobs.open(row.sha256) as f:
            return f.read()

    def _check_work(self, config: TrainingConfig, steps: int) -> None:
        work = steps * config.batch_size * config.max_seq_len
        if work > self.max_job_tokens:
            raise InvalidRequestError(
                f"this job asks for {steps} steps x batch_size {config.batch_size} x max_seq_len {config.max_seq_len} "
                f"= {work} tokens of training; at most {self.max_job_tokens} per job here (lower max_steps, n_epochs, "
                "batch_size or max_seq_len)", code="job_too_large", param="hyperparameters")

    async def create(self, tenant: Tenant, request: JobCreate) -> FineTuningJob:
        name, version = split_ref(request.model)
        base = await asyncio.to_thread(self.registry.find_base_version, name, version)
        if base is None:
            raise InvalidRequestError(f"model {request.model!r} is not a base model that can be fine-tuned",
                                      code="model_not_available", param="model")
        config = training_config(request.hyperparameters, request.method, request.seed)
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
        training = await asyncio.to_thread(self.read_file, tenant.id, request.training_file, "training_file")
        validation = None
        if request.validation_file:
            validation = await asyncio.to_thread(self.read_file, tenant.id, request.validation_file,
                                                 "validation_file")
        # Parse and tokenize now: a bad file is a 400 naming the line, not a failed job later.
        prepared = await asyncio.to_thread(prepare, Path(base.path), training, validation, config)
        self._check_work(config, total_steps(config, prepared.n_train))
        return await asyncio.to_thread(
            self.repo.add_job, tenant_id=tenant.id, base_version_id=base.id, model=request.model,
            training_file=request.training_file, validation_file=request.validation_file, suffix=request.suffix,
            hyperparameters=config.model_dump())
