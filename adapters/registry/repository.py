"""Queries and writes on the registry; the only module that builds SQL for the rest of the code."""

import re
from datetime import datetime
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from adapters.registry.models import Adapter, AdapterStatus, ApiKey, BaseModel, BaseVersion, Tenant, utcnow
from adapters.errors import ConflictError, InvalidRequestError, NotFoundError
from adapters.registry.adapter_lifecycle import check_transition
from adapters.registry.adapter_quota import AdapterQuota
from adapters.registry.database import serialize_on
from adapters.registry.api_keys import display_prefix, hash_api_key, new_api_key

# ASCII only, matched whole (fullmatch: a "$" would let a trailing newline through).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits, within every database's integer


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequestError(
            f"{kind} name {name!r} is invalid: use 1-128 ASCII letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit", param="name")
    return name


def split_ref(ref: str, param: str = "model") -> tuple[str, int | None]:
    """``name@3`` -> ("name", 3); ``name`` -> ("name", None)."""
    name, sep, version = ref.rpartition("@")
    if not sep:
        return ref, None
    if not VERSION_PATTERN.fullmatch(version):
        raise InvalidRequestError(f"version in {ref!r} must be an integer from 1 to 999999999 (ASCII digits)",
                                  param=param)
    return name, int(version)


class Repository:
    """Base of the repositories: one transaction per ``session()`` block."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self._sessions

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s


class Registry(Repository):

    # --- tenants and keys -------------------------------------------------------------
    def ping(self) -> None:
        """Raises unless the database answers."""
        with self.session() as s:
            s.execute(select(1))

    def create_tenant(self, name: str) -> tuple[Tenant, str]:
        check_name("tenant", name)
        try:
            with self.session() as s:
                tenant = Tenant(name=name)
                s.add(tenant)
                s.flush()
                key = self._add_key(s, tenant)
            return tenant, key
        except IntegrityError:
            raise ConflictError(f"tenant {name!r} already exists", code="tenant_exists") from None

    def create_api_key(self, tenant_name: str) -> str:
        with self.session() as s:
            return self._add_key(s, self._tenant(s, tenant_name))

    def _add_key(self, s: Session, tenant: Tenant) -> str:
        key = new_api_key()
        s.add(ApiKey(tenant_id=tenant.id, key_hash=hash_api_key(key), prefix=display_prefix(key)))
        return key

    def _tenant(self, s: Session, name: str) -> Tenant:
        tenant = s.scalar(select(Tenant).where(Tenant.name == name))
        if tenant is None:
            raise NotFoundError(f"tenant {name!r} does not exist", code="tenant_not_found")
        return tenant

    def get_tenant(self, name: str) -> Tenant:
        with self.session() as s:
            return self._tenant(s, name)

    def list_tenants(self) -> list[Tenant]:
        with self.session() as s:
            return list(s.scalars(select(Tenant).order_by(Tenant.id)))

    def set_tenant_disabled(self, tenant_name: str, disabled: bool) -> Tenant:
        with self.session() as s:
            tenant = self._tenant(s, tenant_name)
            if disabled and tenant.disabled_at is None:
                tenant.disabled_at = utcnow()
            elif not disabled:
                tenant.disabled_at = None
            return tenant

    def list_api_keys(self, tenant_name: str) -> list[ApiKey]:
        with self.session() as s:
            tenant = self._tenant(s, tenant_name)
            return list(s.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant.id).order_by(ApiKey.id)))

    def revoke_api_key(self, tenant_name: str, key_id: int) -> ApiKey:
        """Revoke one of the tenant's keys (idempotent: a revoked key stays revoked at its first time)."""
        with self.session() as s:
            tenant = self._tenant(s, tenant_name)
            key = s.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant.id))
            if key is None:
                raise NotFoundError(f"tenant {tenant_name!r} has no API key {key_id}", code="api_key_not_found")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            return key

    def tenant_for_key(self, key: str) -> Tenant | None:
        with self.session() as s:
            return s.scalar(
                select(Tenant).join(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None),
                                                  Tenant.disabled_at.is_(None))
            )

    # --- base models ------------------------------------------------------------------
    def add_base_version(self, name: str, version: int | None, *, path: str, fingerprint: str,
                         architecture: dict, source: str) -> BaseVersion:
        check_name("base model", name)
        with self.session() as s:
            base = s.scalar(select(BaseModel).where(BaseModel.name == name))
            if base is None:
                base = BaseModel(name=name)
                s.add(base)
                s.flush()
            latest = s.scalar(select(func.max(BaseVersion.version)).where(BaseVersion.base_model_id == base.id)) or 0
            version = version or latest + 1
            if s.scalar(select(BaseVersion).where(BaseVersion.base_model_id == base.id, BaseVersion.version == version)):
                raise ConflictError(f"base model {name}@{version} already exists", code="base_version_exists")
            row = BaseVersion(base_model_id=base.id, version=version, path=path, fingerprint=fingerprint,
                              architecture=architecture, source=source)
            s.add(row)
            s.flush()
            s.refresh(row, ["base_model"])
            return row

    def versions_of(self, name: str) -> list[BaseVersion]:
        """Every version of one base, newest first."""
        with self.session() as s:
            return list(s.scalars(select(BaseVersion).join(BaseModel).options(joinedload(BaseVersion.base_model))
                                  .where(BaseModel.name == name).order_by(BaseVersion.version.desc())))

    def find_base_version(self, name: str, version: int | None = None) -> BaseVersion | None:
        with self.session() as s:
            query = (select(BaseVersion).join(BaseModel).options(joinedload(BaseVersion.base_model))
                     .where(BaseModel.name == name))
            if version is not None:
                query = query.where(BaseVersion.version == version)
            return s.scalar(query.order_by(BaseVersion.version.desc()).limit(1))

    def list_base_versions(self) -> list[BaseVersion]:
        with self.session() as s:
            return list(s.scalars(select(BaseVersion).options(joinedload(BaseVersion.base_model))
                                  .order_by(BaseVersion.base_model_id, BaseVersion.version)))

    def served_base_versions(self) -> list[BaseVersion]:
        """The latest version of every base, plus any older version an adapter is mapped to
        (ready, or still waiting for its live check there)."""
        versions = self.list_base_versions()
        latest = {}
        for v in versions:
            latest[v.base_model_id] = v
        live = (AdapterStatus.ready, AdapterStatus.received, AdapterStatus.validating)
        with self.session() as s:
            in_use = set(s.scalars(select(Adapter.base_version_id).where(Adapter.status.in_(live))))
        return [v for v in versions if v is latest[v.base_model_id] or v.id in in_use]

    # --- adapters ---------------------------------------------------------------------
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
