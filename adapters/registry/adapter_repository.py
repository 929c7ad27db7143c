"""Adapters (every version of every tenant's adapters): registration under the tenant's quota,
lookups, lifecycle transitions, pins, eval sets and screening records."""

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from adapters.errors import ConflictError
from adapters.registry.adapter_lifecycle import check_transition
from adapters.registry.adapter_quota import AdapterQuota
from adapters.registry.database import serialize_on
from adapters.registry.models import Adapter, AdapterStatus, BaseVersion, Tenant, utcnow
from adapters.registry.names import check_name
from adapters.registry.repository import Repository


class AdapterRepository(Repository):
    def add_adapter(self, tenant: Tenant, name: str, base_version: BaseVersion, *,
                    quota: AdapterQuota | None = None, **fields) -> Adapter:
        """``quota`` is checked in the inserting transaction, under the tenant's lock: two uploads
        at once cannot both take the last place (a check before storing only fails fast)."""
        check_name("adapter", name)
        for _ in range(3):  # two writers racing for the same next version: retry
            try:
                with self.session() as s:
                    if quota is not None:
                        serialize_on(s, f"tenant-usage:{tenant.id}")
                        quota.check(tenant, *self._usage(s, tenant.id), fields.get("size_bytes", 0))
                    latest = s.scalar(select(func.max(Adapter.version))
                                      .where(Adapter.tenant_id == tenant.id, Adapter.name == name)) or 0
                    row = Adapter(tenant_id=tenant.id, name=name, version=latest + 1,
                                  base_version_id=base_version.id,
                                  trained_base_version_id=base_version.id, **fields)
                    s.add(row)
                    s.flush()
                    s.refresh(row, ["base_version", "trained_base_version", "tenant"])
                    s.refresh(row.base_version, ["base_model"])
                    return row
            except IntegrityError:
                continue
        raise ConflictError(f"adapter {name!r} is being registered concurrently; try again", code="adapter_conflict",
                            retryable=True)

    def _adapter_query(self):
        return select(Adapter).options(
            joinedload(Adapter.base_version).joinedload(BaseVersion.base_model),
            joinedload(Adapter.trained_base_version).joinedload(BaseVersion.base_model), joinedload(Adapter.tenant))

    def resolve_adapter(self, tenant_id: int, name: str, version: int | None) -> Adapter | None:
        """The ready adapter ``name`` (latest ready version, or exactly ``version``) of one tenant."""
        with self.session() as s:
            query = self._adapter_query().where(
                Adapter.tenant_id == tenant_id, Adapter.name == name, Adapter.status == AdapterStatus.ready)
            if version is not None:
                query = query.where(Adapter.version == version)
            return s.scalar(query.order_by(Adapter.version.desc()).limit(1))

    def list_adapters(self, tenant_id: int | None = None, *, ready_only: bool = True,
                      name: str | None = None) -> list[Adapter]:
        """A tenant's adapters, every version (deleted ones never), ordered by name and version."""
        with self.session() as s:
            query = self._adapter_query().where(Adapter.status != AdapterStatus.deleted)
            if tenant_id is not None:
                query = query.where(Adapter.tenant_id == tenant_id)
            if ready_only:
                query = query.where(Adapter.status == AdapterStatus.ready)
            if name is not None:
                query = query.where(Adapter.name == name)
            return list(s.scalars(query.order_by(Adapter.name, Adapter.version)))

    def adapters_on(self, base_version_id: int) -> list[Adapter]:
        """Ready adapters (every tenant, every version) served on one base version."""
        with self.session() as s:
            return list(s.scalars(self._adapter_query().where(
                Adapter.base_version_id == base_version_id, Adapter.status == AdapterStatus.ready)
                .order_by(Adapter.tenant_id, Adapter.name, Adapter.version)))

    def screening_on(self, base_version_id: int) -> list[dict]:
        """The recorded screening signals of the ready adapters served on one base version."""
        with self.session() as s:
            return [row for row in s.scalars(select(Adapter.screening).where(
                Adapter.base_version_id == base_version_id, Adapter.status == AdapterStatus.ready)) if row]

    def record_screening(self, adapter_id: int, screening: dict) -> None:
        with self.session() as s:
            s.execute(update(Adapter).where(Adapter.id == adapter_id).values(screening=screening))

    def adapters_in(self, *statuses: AdapterStatus) -> list[Adapter]:
        with self.session() as s:
            return list(s.scalars(self._adapter_query().where(Adapter.status.in_(statuses)).order_by(Adapter.id)))

    def transition(self, adapter_id: int, to: AdapterStatus, reason: str | None = None, *,
                   expect: tuple[AdapterStatus, ...]) -> Adapter | None:
        """Compare-and-set (adapters/registry/adapter_lifecycle.py): the adapter now, or None if
        it was no longer in one of ``expect`` (deleted meanwhile, or finished elsewhere)."""
        check_transition(expect, to)
        with self.session() as s:
            changed = s.execute(update(Adapter).where(Adapter.id == adapter_id, Adapter.status.in_(expect))
                                .values(status=to, status_reason=reason)).rowcount
        return self.get_adapter(adapter_id) if changed == 1 else None

    def claim_check(self, adapter_id: int, stale_before: datetime) -> Adapter | None:
        """Take a pending live check: ``received``, or ``validating`` by a gateway that has not
        touched it since ``stale_before`` (it died mid-check). One gateway wins each claim."""
        with self.session() as s:
            changed = s.execute(update(Adapter).where(
                Adapter.id == adapter_id,
                (Adapter.status == AdapterStatus.received)
                | ((Adapter.status == AdapterStatus.validating) & (Adapter.updated_at < stale_before)))
                .values(status=AdapterStatus.validating, status_reason=None, updated_at=utcnow())).rowcount
        return self.get_adapter(adapter_id) if changed == 1 else None

    def get_adapter(self, adapter_id: int) -> Adapter:
        with self.session() as s:
            return s.scalar(self._adapter_query().where(Adapter.id == adapter_id))

    def tenant_usage(self, tenant_id: int) -> tuple[int, int]:
        """(adapter versions, bytes) a tenant holds, rejected and deleted ones not counted."""
        with self.session() as s:
            return self._usage(s, tenant_id)

    @staticmethod
    def _usage(s: Session, tenant_id: int) -> tuple[int, int]:
        count, size = s.execute(
            select(func.count(Adapter.id), func.coalesce(func.sum(Adapter.size_bytes), 0)).where(
                Adapter.tenant_id == tenant_id,
                Adapter.status.not_in([AdapterStatus.deleted, AdapterStatus.rejected]))).one()
        return int(count), int(size)

    def mark_deleted(self, tenant_id: int, name: str, version: int | None) -> list[Adapter]:
        with self.session() as s:
            query = self._adapter_query().where(Adapter.tenant_id == tenant_id, Adapter.name == name,
                                                Adapter.status != AdapterStatus.deleted)
            if version is not None:
                query = query.where(Adapter.version == version)
            rows = list(s.scalars(query))
            for row in rows:
                row.status, row.status_reason = AdapterStatus.deleted, None
            return rows

    def set_pin(self, adapter_ids: list[int], pinned: bool, base_version_id: int | None = None) -> None:
        """Pin (optionally moving to ``base_version_id``) or unpin adapters, in one transaction."""
        with self.session() as s:
            for row in s.scalars(select(Adapter).where(Adapter.id.in_(adapter_ids))):
                row.pinned = pinned
                if base_version_id is not None:
                    row.base_version_id = base_version_id

    def set_eval_set(self, adapter_ids: list[int], sha256: str, scoring: str, items: int) -> None:
        with self.session() as s:
            for row in s.scalars(select(Adapter).where(Adapter.id.in_(adapter_ids))):
                row.eval_set_sha256, row.eval_scoring, row.eval_items = sha256, scoring, items
