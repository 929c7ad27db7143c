"""Wire types of the adapter API (shared with the admin API)."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from adapters.registry.models import Adapter
from server.list_envelope import ListEnvelope


class AdapterPublic(BaseModel):
    name: str
    version: int
    tenant: str
    base_model: str
    base_version: int
    """The base version that serves it now (a migration may have moved it)."""
    trained_on_version: int
    """The base version it was uploaded or trained on."""
    pinned: bool
    """Pinned by its tenant: migrations leave it on ``base_version``."""
    migration: dict | None = None
    """Its latest migration: job, from, to, decision, reasons and the gate's evidence."""
    status: str
    status_reason: str | None
    rank: int
    lora_alpha: float
    target_modules: list[str]
    sha256: str
    size_bytes: int
    trained_with: str
    description: str
    eval_items: int
    eval_scoring: str | None
    training_metadata: dict | None = None
    screening: dict | None = None
    """Backdoor screening (docs/SECURITY.md): weight statistics of dW = B A and their place among the
    base's adapters, the behavioural trigger scan, and the deployment policy's verdict."""
    warnings: list[str] = []
    """The screening's reasons when it flagged the adapter under a ``warn`` policy (or ``refuse``)."""
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, a: Adapter) -> "AdapterPublic":
        return cls(
            name=a.name, version=a.version, tenant=a.tenant.name, base_model=a.base_version.base_model.name,
            base_version=a.base_version.version,
            trained_on_version=(a.trained_base_version or a.base_version).version, pinned=a.pinned,
            migration=a.migration, status=a.status.value, status_reason=a.status_reason,
            rank=a.rank, lora_alpha=a.lora_alpha, target_modules=a.target_modules, sha256=a.weights_sha256,
            size_bytes=a.size_bytes, trained_with=a.trained_with, description=a.description,
            eval_items=a.eval_items, eval_scoring=a.eval_scoring,
            training_metadata=a.training_metadata, screening=a.screening, warnings=screening_warnings(a.screening),
            created_at=a.created_at, updated_at=a.updated_at)


def screening_warnings(screening: dict | None) -> list[str]:
    """Every recorded verdict (upload or fine-tuning, a migration's) that flagged it under warn/refuse."""
    verdicts = [(screening or {}).get("verdict"), ((screening or {}).get("migration") or {}).get("verdict")]
    return [f"backdoor screening: {r}" for v in verdicts if v and v["flagged"] and v["action"] != "record"
            for r in v["reasons"]]


class AdapterVersions(BaseModel):
    name: str
    object: Literal["adapter"] = "adapter"
    versions: list[AdapterPublic]


AdapterList = ListEnvelope[AdapterPublic]


class AdapterDeleted(BaseModel):
    id: str
    object: Literal["adapter"] = "adapter"
    deleted: bool = True
    versions: list[int]
