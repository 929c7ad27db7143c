"""Turn a request's ``model`` into what serves it: a base version, or one tenant's adapter."""

from dataclasses import dataclass

from adapters.registry.models import Adapter, Tenant
from adapters.registry.repository import Registry, split_ref
from server.errors import InvalidRequestError, ModelNotFoundError


@dataclass(frozen=True)
class Target:
    public_name: str  # what the caller asked for, echoed back in responses
    base_ref: str  # "<base>@<version>": picks the worker
    adapter: Adapter | None  # None = the bare base model

    @property
    def lora_name(self) -> str | None:
        return self.adapter.lora_name if self.adapter else None

    @property
    def adapter_label(self) -> str:
        return self.adapter.name if self.adapter else "_base"


def resolve_model(registry: Registry, tenant: Tenant, model: str) -> Target:
    try:
        name, version = split_ref(model)
    except InvalidRequestError:
        raise model_not_found(model) from None
    base = registry.find_base_version(name, version)
    if base is not None:
        return Target(model, base.ref, None)
    adapter = registry.resolve_adapter(tenant.id, name, version)
    if adapter is None:
        # Another tenant's adapter answers exactly like a missing one.
        raise model_not_found(model)
    return Target(model, adapter.base_version.ref, adapter)


def model_not_found(model: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"The model `{model}` does not exist or you do not have access to it.", param="model")
