"""SQLAlchemy 2 tables of the registry: tenants, API keys, base models and versions, adapters."""

import enum
import hashlib
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class LeasedJob:
    """Columns every background job has (fine-tuning, migrations): who holds it and until when
    (gateways claim jobs through the database, job_leases.py), its cancel flag, error and times."""

    claimed_by: Mapped[str | None] = mapped_column(String(96), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AdapterStatus(str, enum.Enum):
    """Lifecycle: received -> validating -> ready | rejected; deleted is a tombstone."""

    received = "received"
    validating = "validating"
    ready = "ready"
    rejected = "rejected"
    deleted = "deleted"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A disabled tenant's keys are refused (401); its adapters and jobs are kept.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # Only a hash is stored; the key itself is shown once at creation.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    tenant: Mapped[Tenant] = relationship()


class BaseModel(Base):
    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BaseVersion(Base):
    __tablename__ = "base_versions"
    __table_args__ = (UniqueConstraint("base_model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    # sha256 over the sorted (module name, shape) list: equal fingerprints = same architecture.
    fingerprint: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[dict] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    base_model: Mapped[BaseModel] = relationship()

    @property
    def ref(self) -> str:
        return f"{self.base_model.name}@{self.version}"


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    # The base version that serves it now; a migration job moves it (atomically, per adapter).
    base_version_id: Mapped[int] = mapped_column(ForeignKey("base_versions.id"), index=True)
    # The base version it was uploaded or trained on; never changes.
    trained_base_version_id: Mapped[int | None] = mapped_column(ForeignKey("base_versions.id"), nullable=True)
    # Pinned by its tenant: migration jobs leave it on its base version.
    pinned: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The latest migration verdict on it (job, versions, decision, reasons, gate evidence).
    migration: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    rank: Mapped[int] = mapped_column(Integer)
    lora_alpha: Mapped[float]
    target_modules: Mapped[list] = mapped_column(JSON)
    config_sha256: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    # sha256 of ``manifest`` (a blob of its own): what a worker that fetches adapters resolves.
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[AdapterStatus] = mapped_column(Enum(AdapterStatus, native_enum=False, length=16))
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    trained_with: Mapped[str] = mapped_column(String(32), default="unknown")
    description: Mapped[str] = mapped_column(Text, default="")
    # Eval set (JSONL blob) kept for base-model migrations, with its scoring mode.
    eval_set_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    eval_scoring: Mapped[str | None] = mapped_column(String(32), nullable=True)
    eval_items: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # How it was trained (fine-tuning job id, method, hyperparameters), when trained here.
    training_metadata: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Backdoor screening: weight signals, trigger scan, verdict (adapters/screening/, docs/SECURITY.md).
    screening: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    tenant: Mapped[Tenant] = relationship()
    base_version: Mapped[BaseVersion] = relationship(foreign_keys=[base_version_id])
    trained_base_version: Mapped[BaseVersion | None] = relationship(foreign_keys=[trained_base_version_id])

    @property
    def manifest(self) -> bytes:
        return adapter_manifest(self.config_sha256, self.weights_sha256)

    @property
    def lora_name(self) -> str:
        """Name the adapter is loaded under on a worker: ``lora-`` + the sha256 of its manifest.
        Content-addressed: the same name always means the same weights, even across gateways or
        databases sharing a worker, and identical adapters of two tenants share one slot."""
        return "lora-" + hashlib.sha256(self.manifest).hexdigest()


def adapter_manifest(config_sha256: str, weights_sha256: str) -> bytes:
    """``<config sha256>:<weights sha256>``: stored as a blob of its own, it lets a worker that is
    given only an adapter's ``lora_name`` fetch it from the blob store (server/workers/vllm_plugin/)."""
    return f"{config_sha256}:{weights_sha256}".encode()


class BlobClaim(Base):
    """A reference to a blob being made (stored, not yet referenced by its row): the collector
    never deletes a blob with a claim younger than its grace period (adapters/registry/blob_references.py)."""

    __tablename__ = "blob_claims"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class FileStatus(str, enum.Enum):
    processed = "processed"
    deleted = "deleted"


class StoredFile(Base):
    """A file uploaded through /v1/files (training data); its bytes live in the blob store."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[FileStatus] = mapped_column(Enum(FileStatus, native_enum=False, length=16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobStatus(str, enum.Enum):
    """OpenAI's fine-tuning job states."""

    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    paused = "paused"  # stopped at a checkpoint by its tenant; resuming queues it again


TERMINAL_JOB_STATES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class FineTuningJob(LeasedJob, Base):
    __tablename__ = "fine_tuning_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    base_version_id: Mapped[int] = mapped_column(ForeignKey("base_versions.id"))
    model: Mapped[str] = mapped_column(String(160))  # as the client named the base
    training_file: Mapped[str] = mapped_column(ForeignKey("files.id"))
    validation_file: Mapped[str | None] = mapped_column(ForeignKey("files.id"), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hyperparameters: Mapped[dict] = mapped_column(JSON)
    # Continued training: the weights the job starts from (a blob it references until it ends).
    init_weights_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The last checkpoint in the blob store (a tar, adapters/training/checkpoint_archive.py): any
    # gateway that takes the job over resumes from it. Referenced until the job ends.
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=24), index=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(160), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pause_requested: Mapped[bool] = mapped_column(default=False, server_default=false())

    tenant: Mapped[Tenant] = relationship()
    base_version: Mapped[BaseVersion] = relationship()


class FineTuningEvent(Base):
    __tablename__ = "fine_tuning_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MigrationStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    rolled_back = "rolled_back"


ACTIVE_MIGRATION_STATES = (MigrationStatus.queued, MigrationStatus.running)


class MigrationJob(LeasedJob, Base):
    """Moves the ready adapters of one base version (or a selection) onto a newer version."""

    __tablename__ = "migration_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    from_version_id: Mapped[int] = mapped_column(ForeignKey("base_versions.id"))
    to_version_id: Mapped[int] = mapped_column(ForeignKey("base_versions.id"))
    status: Mapped[MigrationStatus] = mapped_column(Enum(MigrationStatus, native_enum=False, length=16), index=True)
    thresholds: Mapped[dict] = mapped_column(JSON)  # the gate thresholds, fixed when the job was created
    selection: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # as requested; None = everything
    skipped: Mapped[list] = mapped_column(JSON, default=list)  # [{adapter, reason}] left out at creation
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    from_version: Mapped[BaseVersion] = relationship(foreign_keys=[from_version_id])
    to_version: Mapped[BaseVersion] = relationship(foreign_keys=[to_version_id])
    items: Mapped[list["MigrationItem"]] = relationship(back_populates="job", order_by="MigrationItem.id")


class ItemState(str, enum.Enum):
    """pending -> done (decided; promoted too when migrated) -> rolled_back; skipped if the
    adapter changed under the job (deleted, pinned, moved)."""

    pending = "pending"
    done = "done"
    skipped = "skipped"
    rolled_back = "rolled_back"


class MigrationItem(Base):
    __tablename__ = "migration_items"
    __table_args__ = (UniqueConstraint("job_id", "adapter_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("migration_jobs.id", ondelete="CASCADE"), index=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    state: Mapped[ItemState] = mapped_column(Enum(ItemState, native_enum=False, length=16))
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)  # migrated | kept_on_old | incompatible
    reasons: Mapped[list] = mapped_column(JSON, default=list)
    evidence: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    job: Mapped[MigrationJob] = relationship(back_populates="items")
    adapter: Mapped[Adapter] = relationship()
