"""Wire types of the migration API (/admin/migrations) and of adapter pinning."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.registry.models import ItemState, MigrationItem, MigrationJob
from migration.validation_gate.gate import GateThresholds
from server.list_envelope import ListEnvelope


class MigrationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(min_length=1, description="Base model name, e.g. 'smollm2-135m-instruct'.")
    to_version: int | None = Field(default=None, ge=1, le=999_999_999, description="Target version (default: the newest).")
    from_version: int | None = Field(default=None, ge=1, le=999_999_999,
                                     description="Version whose adapters move (default: the one before the target).")
    tenants: list[str] | None = Field(default=None, description="Only these tenants' adapters.")
    adapters: list[str] | None = Field(default=None, description="Only these adapters: 'tenant/name' or "
                                                                  "'tenant/name@version'.")
    thresholds: GateThresholds | None = Field(default=None, description="Gate thresholds (default: the "
                                                                          "server's migration_gate setting).")


class MigrationItemPublic(BaseModel):
    tenant: str
    adapter: str
    adapter_version: int
    trained_with: str
    state: str
    decision: str | None
    reasons: list[str]
    evidence: dict | None
    """The gate's evidence (migration/validation_gate/gate.py), plus ``screening`` when the trigger
    scan ran before promotion (adapters/screening/)."""
    served_on: str

    @classmethod
    def of(cls, item: MigrationItem) -> "MigrationItemPublic":
        a = item.adapter
        return cls(tenant=a.tenant.name, adapter=a.name, adapter_version=a.version, trained_with=a.trained_with,
                   state=item.state.value, decision=item.decision, reasons=item.reasons, evidence=item.evidence,
                   served_on=a.base_version.ref)


class MigrationProgress(BaseModel):
    total: int
    finished: int
    migrated: int
    kept_on_old: int
    incompatible: int
    errors: int
    """Adapters that could not be judged (a worker's failure): they stay where they are."""
    skipped: int


class MigrationPublic(BaseModel):
    id: str
    object: Literal["migration"] = "migration"
    base_model: str
    from_version: int
    to_version: int
    status: str
    thresholds: dict
    selection: dict | None
    skipped_at_start: list[dict]
    progress: MigrationProgress
    error: dict | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rolled_back_at: datetime | None
    items: list[MigrationItemPublic]

    @classmethod
    def of(cls, job: MigrationJob) -> "MigrationPublic":
        decisions = [i.decision for i in job.items if i.state in (ItemState.done, ItemState.rolled_back)]
        progress = MigrationProgress(
            total=len(job.items), finished=sum(i.state != ItemState.pending for i in job.items),
            migrated=decisions.count("migrated"), kept_on_old=decisions.count("kept_on_old"),
            incompatible=decisions.count("incompatible"), errors=decisions.count("error"),
            skipped=sum(i.state == ItemState.skipped for i in job.items))
        return cls(id=job.id, base_model=job.from_version.base_model.name, from_version=job.from_version.version,
                   to_version=job.to_version.version, status=job.status.value, thresholds=job.thresholds,
                   selection=job.selection, skipped_at_start=job.skipped, progress=progress, error=job.error,
                   created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                   rolled_back_at=job.rolled_back_at, items=[MigrationItemPublic.of(i) for i in job.items])


MigrationList = ListEnvelope[MigrationPublic]


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_version: int | None = Field(default=None, ge=1, le=999_999_999, description="Base version to pin to: the one it is "
                                     "served on now (default) or the one it was trained on.")

