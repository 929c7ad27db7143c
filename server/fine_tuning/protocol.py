"""Wire types of /v1/fine_tuning/jobs, in OpenAI's shapes (the official client parses them)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.registry.models import FineTuningEvent, FineTuningJob
from server.list_envelope import ListEnvelope


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The base model: name or name@version")
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    seed: int | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None  # OpenAI's {"type": "supervised", "supervised": {"hyperparameters": ...}}
    integrations: list | None = None
    metadata: dict[str, str] | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list | None = None

    @classmethod
    def of(cls, job: FineTuningJob) -> "JobObject":
        return cls(
            id=job.id, created_at=int(job.created_at.timestamp()), error=JobError(**job.error) if job.error else None,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=int(job.finished_at.timestamp()) if job.finished_at else None,
            hyperparameters=job.hyperparameters, model=job.model, organization_id=job.tenant.name,
            seed=job.hyperparameters.get("seed", 0), status=job.status.value, trained_tokens=job.trained_tokens,
            training_file=job.training_file, validation_file=job.validation_file)


JobList = ListEnvelope[JobObject]


class EventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"

    @staticmethod
    def public_id(e: FineTuningEvent) -> str:
        return f"ftevent-{e.id}"

    @classmethod
    def of(cls, e: FineTuningEvent) -> "EventObject":
        return cls(id=cls.public_id(e), created_at=int(e.created_at.timestamp()), level=e.level, message=e.message,
                   data=e.data, type="metrics" if e.data and "step" in e.data else "message")


EventList = ListEnvelope[EventObject]


class CheckpointObject(BaseModel):
    """OpenAI's fine-tuning checkpoint: a servable model at a step. Here only the finished
    adapter is one; the trainer's intermediate checkpoints are resume points, not models."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int

    @classmethod
    def final(cls, job: FineTuningJob, events: list[FineTuningEvent]) -> "CheckpointObject | None":
        """The job's result as its one checkpoint (None until it succeeded); ``events`` newest first."""
        if job.fine_tuned_model is None or job.finished_at is None:
            return None
        last = next((e.data for e in events if e.data and "step" in e.data), None) or {}
        metrics = {"step": float(last.get("step", 0))}
        if last.get("train_loss") is not None:
            metrics["train_loss"] = float(last["train_loss"])
        return cls(id=f"ftckpt-{job.id}-final", created_at=int(job.finished_at.timestamp()),
                   fine_tuned_model_checkpoint=job.fine_tuned_model, fine_tuning_job_id=job.id, metrics=metrics,
                   step_number=int(last.get("step", 0)))


class CheckpointList(ListEnvelope[CheckpointObject]):
    first_id: str | None = None
    last_id: str | None = None
