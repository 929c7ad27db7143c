"""Wire types of the admin API (and the adapter view shared with tenants)."""

from datetime import datetime

from pydantic import BaseModel, Field

from adapters.registry.models import Adapter


class TenantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class TenantPublic(BaseModel):
    name: str
    created_at: datetime


class ApiKeyCreated(BaseModel):
    tenant: str
    api_key: str = Field(description="Shown once; only its hash is stored.")


class BaseVersionPublic(BaseModel):
    name: str
    version: int
    ref: str
    path: str
    fingerprint: str
    source: str
    created_at: datetime


class AdapterPublic(BaseModel):
    name: str
    version: int
    tenant: str
    base_model: str
    base_version: int
    status: str
    status_reason: str | None
    rank: int
    lora_alpha: float
    target_modules: list[str]
    sha256: str
    size_bytes: int
    trained_with: str
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, a: Adapter) -> "AdapterPublic":
        return cls(
            name=a.name, version=a.version, tenant=a.tenant.name, base_model=a.base_version.base_model.name,
            base_version=a.base_version.version, status=a.status.value, status_reason=a.status_reason,
            rank=a.rank, lora_alpha=a.lora_alpha, target_modules=a.target_modules, sha256=a.weights_sha256,
            size_bytes=a.size_bytes, trained_with=a.trained_with, description=a.description,
            created_at=a.created_at, updated_at=a.updated_at)


class WorkerPublic(BaseModel):
    base_version: str
    url: str
    state: str
    external: bool
    pid: int | None
    restarts: int
    resident_adapters: list[str]
    log_path: str | None
