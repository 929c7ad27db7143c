"""The registry's three aggregates on one session factory: what the composition root (server/app.py)
and the CLI build once. A component that needs one aggregate should take that repository."""

from adapters.registry.adapter_repository import AdapterRepository
from adapters.registry.base_version_repository import BaseVersionRepository
from adapters.registry.tenant_repository import TenantRepository


class Registry(TenantRepository, BaseVersionRepository, AdapterRepository):
    pass
