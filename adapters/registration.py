"""Register an adapter for a tenant: parse, validate against its base, store, record.

Every check runs before anything is stored, and the blobs are written before the registry
row, so a failure at any step leaves no adapter behind (an orphan blob at worst, which is
content-addressed and harmless).
"""

import io
from dataclasses import dataclass
from pathlib import Path

from adapters.format.peft_config import parse_lora_config
from adapters.format.safetensors_header import read_header
from adapters.registry.models import Adapter, AdapterStatus, BaseVersion, Tenant
from adapters.registry.repository import Registry, check_name, split_ref
from adapters.storage.blob_store import BlobStore
from adapters.validation.against_base import check_against_base, check_finite
from migration.base_versions.architecture import BaseArchitecture
from server.errors import AdapterInvalidError, InvalidRequestError, NotFoundError

TRAINED_WITH = ("trans-peft", "lora", "unknown")


@dataclass(frozen=True)
class AdapterSubmission:
    name: str
    config_json: bytes
    weights_path: Path  # a local file the caller owns (e.g. a spooled upload)
    base_model: str | None = None  # "name" or "name@version"; default: the only/latest base
    description: str = ""
    trained_with: str = "unknown"


class AdapterRegistration:
    def __init__(self, registry: Registry, blobs: BlobStore, *, max_rank: int):
        self.registry = registry
        self.blobs = blobs
        self.max_rank = max_rank

    def register(self, tenant: Tenant, sub: AdapterSubmission) -> Adapter:
        check_name("adapter", sub.name)
        if sub.trained_with not in TRAINED_WITH:
            raise InvalidRequestError(f"trained_with {sub.trained_with!r} is not one of {list(TRAINED_WITH)}",
                                      param="trained_with")
        base = self._base_version(sub.base_model)
        if sub.name == base.base_model.name:
            raise InvalidRequestError(f"adapter name {sub.name!r} is taken by a base model", param="name")

        config = parse_lora_config(sub.config_json, max_rank=self.max_rank)
        if sub.weights_path.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"):
            raise AdapterInvalidError("only safetensors weights are accepted; pickle-based files run code on load",
                                      code="pickle_not_allowed")
        header = read_header(sub.weights_path, display_name="adapter_model.safetensors")
        check_against_base(config, header, BaseArchitecture.from_json(base.architecture))
        check_finite(sub.weights_path)

        clean_config = config.to_peft_json()
        config_sha, _ = self.blobs.put_stream(io.BytesIO(clean_config))
        weights_sha, size = self.blobs.put_file(sub.weights_path)
        return self.registry.add_adapter(
            tenant, sub.name, base, rank=config.r, lora_alpha=config.lora_alpha,
            target_modules=sorted(config.target_modules), config_sha256=config_sha, weights_sha256=weights_sha,
            size_bytes=size, status=AdapterStatus.ready, trained_with=sub.trained_with,
            description=sub.description)

    def _base_version(self, ref: str | None) -> BaseVersion:
        if ref is None:
            bases = {v.base_model.name for v in self.registry.list_base_versions()}
            if len(bases) != 1:
                raise InvalidRequestError(f"base_model is required: choose one of {sorted(bases)}",
                                          param="base_model")
            ref = bases.pop()
        name, version = split_ref(ref)
        base = self.registry.find_base_version(name, version)
        if base is None:
            raise NotFoundError(f"base model {ref!r} does not exist", code="base_model_not_found")
        return base
