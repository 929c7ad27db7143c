"""Tenants and their API keys (stored hashed; a key is shown once, at creation)."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.errors import ConflictError, NotFoundError
from adapters.registry.api_keys import display_prefix, hash_api_key, new_api_key
from adapters.registry.models import ApiKey, Tenant, utcnow
from adapters.registry.names import check_name
from adapters.registry.repository import Repository


class TenantRepository(Repository):
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
