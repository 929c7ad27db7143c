"""Turn a request's ``model`` into what serves it: a base version, or one tenant's adapter."""

from collections.abc import Callable
from dataclasses import dataclass

from adapters.registry.models import Adapter, BaseVersion, Tenant
from adapters.registry.registry import Registry
from adapters.registry.names import split_ref
from adapters.errors import InvalidRequestError, ModelNotFoundError


@dataclass(frozen=True)
class Target:
    public_name: str  # what the caller asked for, echoed back in responses
    base: BaseVersion  # picks the workers
    adapter: Adapter | None  # None = the bare base model

    @property
    def base_ref(self) -> str:
        return self.base.ref

    @property
    def lora_name(self) -> str | None:
        return self.adapter.lora_name if self.adapter else None

    @property
    def adapter_label(self) -> str:
        return self.adapter.name if self.adapter else "_base"


def resolve_model(registry: Registry, tenant: Tenant, model: str,
                  is_served: Callable[[str], bool] = lambda ref: True) -> Target:
    """``base@v`` is that version; a bare base name is its newest version that a ready worker
    serves (so importing a new version switches bare-base traffic only once its worker is up);
    an adapter name is the tenant's adapter on the version it is mapped to now."""
    try:
        name, version = split_ref(model)
    except InvalidRequestError:
        raise model_not_found(model) from None
    if version is None:
        versions = registry.versions_of(name)
        if versions:
            base = next((v for v in versions if is_served(v.ref)), versions[0])
            return Target(model, base, None)
    elif (base := registry.find_base_version(name, version)) is not None:
        return Target(model, base, None)
    adapter = registry.resolve_adapter(tenant.id, name, version)
    if adapter is None:
        # Another tenant's adapter answers exactly like a missing one.
        raise model_not_found(model)
    return Target(model, adapter.base_version, adapter)


def model_not_found(model: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"The model `{model}` does not exist or you do not have access to it.", param="model")
