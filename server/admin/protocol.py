"""Wire types of the admin API (the adapter view lives in server/adapters_api/protocol.py)."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class TenantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class TenantPublic(BaseModel):
    name: str
    created_at: datetime
    disabled_at: datetime | None = None


class ApiKeyCreated(BaseModel):
    tenant: str
    api_key: str = Field(description="Shown once; only its hash is stored.")


class ApiKeyPublic(BaseModel):
    id: int
    prefix: str = Field(description="The key's first characters, to tell keys apart; never the key.")
    created_at: datetime
    revoked_at: datetime | None


class BaseVersionPublic(BaseModel):
    name: str
    version: int
    ref: str
    path: str
    fingerprint: str
    source: str
    created_at: datetime


class WorkerPublic(BaseModel):
    name: str
    base_version: str
    url: str
    state: str
    external: bool
    pid: int | None
    restarts: int
    in_flight: int
    resident_adapters: list[str]
    log_path: str | None


class BaseImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Base model name; an existing name adds a version.")
    source: str = Field(min_length=1, description="Path on the server: a Hugging Face model folder or a .gguf file.")
    version: int | None = Field(default=None, ge=1, le=999_999_999, description="Version number (default: next).")
