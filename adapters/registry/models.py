"""SQLAlchemy 2 tables of the registry: tenants, API keys, base models and versions, adapters."""

import enum
import hashlib
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


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
    base_version_id: Mapped[int] = mapped_column(ForeignKey("base_versions.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    lora_alpha: Mapped[float]
    target_modules: Mapped[list] = mapped_column(JSON)
    config_sha256: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[AdapterStatus] = mapped_column(Enum(AdapterStatus, native_enum=False, length=16))
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    trained_with: Mapped[str] = mapped_column(String(32), default="unknown")
    description: Mapped[str] = mapped_column(Text, default="")
    # Eval set (JSONL blob) kept for base-model migrations, with its scoring mode.
    eval_set_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    eval_scoring: Mapped[str | None] = mapped_column(String(32), nullable=True)
    eval_items: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    tenant: Mapped[Tenant] = relationship()
    base_version: Mapped[BaseVersion] = relationship()

    @property
    def lora_name(self) -> str:
        """Name the adapter is loaded under on a worker. Content-addressed: the same name always
        means the same weights, even across gateways or databases sharing a worker, and
        identical adapters of two tenants share one slot."""
        return "lora-" + hashlib.sha256(f"{self.config_sha256}:{self.weights_sha256}".encode()).hexdigest()[:24]
