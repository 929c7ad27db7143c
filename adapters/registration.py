"""Register an adapter for a tenant: parse, validate against its base, store, record.

Every static check runs before anything is stored, and the blobs are written before the
registry row, so a failure (or a crash) at any step leaves no adapter behind: at worst an
orphan blob, content-addressed and harmless. The row starts in ``validating``; the live
check on a worker (server side) then moves it to ``ready`` or ``rejected``.
"""

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from adapters.format.archive import PICKLE_SUFFIXES
from adapters.format.eval_set import check_scoring, parse_eval_set
from adapters.registry.adapter_quota import AdapterQuota
from adapters.registry.models import Adapter, AdapterStatus, BaseVersion, Tenant, adapter_manifest
from adapters.registry.registry import Registry
from adapters.registry.names import check_name, split_ref
from adapters.storage.blob_lifecycle import BlobLifecycle
from adapters.training.config import Method
from adapters.validation.against_base import check_finite
from adapters.validation.static_check import check_statically
from adapters.screening.policy import ScreeningPolicy
from adapters.screening.population import population_signals
from adapters.screening.weight_signals import weight_signals
from adapters.errors import AdapterInvalidError, InvalidRequestError, NotFoundError

TRAINED_WITH = (*get_args(Method), "unknown")
# Names the platform uses itself: the base inside every worker ("base"), the adapters' names on the
# workers ("lora-<hash>"), and fine-tuned models ("ft:<base>:<tenant>:<suffix>", OpenAI's form).
RESERVED_NAMES = ("base",)
RESERVED_PREFIXES = ("lora-",)
FINE_TUNED_PREFIX = "ft:"


@dataclass(frozen=True)
class AdapterSubmission:
    name: str
    config_json: bytes
    weights_path: Path  # a local file the caller owns (e.g. a spooled upload)
    weights_filename: str = "adapter_model.safetensors"  # as the client named it
    base_model: str | None = None  # "name" or "name@version"; default: the only base
    description: str = ""
    trained_with: str = "unknown"
    eval_set: bytes | None = None  # JSONL
    eval_scoring: str = "exact_match"
    fine_tuned: bool = False  # made by one of our fine-tuning jobs: may use the ft: prefix


class AdapterRegistration:
    def __init__(self, registry: Registry, lifecycle: BlobLifecycle, *, max_rank: int,
                 served_targets: frozenset[str], quota: AdapterQuota,
                 screening: ScreeningPolicy = ScreeningPolicy()):
        self.registry = registry
        self.lifecycle = lifecycle
        self.blobs = lifecycle.blobs
        self.max_rank = max_rank
        self.served_targets = served_targets
        self.quota = quota
        self.screening = screening

    def register(self, tenant: Tenant, sub: AdapterSubmission, training_metadata: dict | None = None) -> Adapter:
        """Validate statically and store; returns the new row in ``validating``."""
        self._check_adapter_name(sub)
        if sub.trained_with not in TRAINED_WITH:
            raise InvalidRequestError(f"trained_with {sub.trained_with!r} is not one of {list(TRAINED_WITH)}",
                                      param="trained_with")
        base = self._base_version(sub.base_model)

        if sub.weights_filename.lower().endswith(PICKLE_SUFFIXES):
            raise AdapterInvalidError(f"{sub.weights_filename!r}: only safetensors weights are accepted; "
                                      "pickle-based files run code on load", code="pickle_not_allowed",
                                      param="adapter_model.safetensors")
        config = check_statically(sub.config_json, sub.weights_path, base.architecture, max_rank=self.max_rank,
                                  served_targets=self.served_targets)
        check_finite(sub.weights_path)
        screening = self._weight_screening(sub, base, config)
        eval_items = parse_eval_set(sub.eval_set) if sub.eval_set is not None else None
        scoring = check_scoring(sub.eval_scoring) if eval_items else None
        self._check_quota(tenant, sub.weights_path.stat().st_size)

        with ExitStack() as claims:  # each blob is claimed until the row referencing it exists
            config_sha, _ = claims.enter_context(self.lifecycle.stored_bytes(config.to_peft_json()))
            weights_sha, size = claims.enter_context(self.lifecycle.stored_file(sub.weights_path))
            eval_sha = claims.enter_context(self.lifecycle.stored_bytes(sub.eval_set))[0] if eval_items else None
            manifest_sha, _ = claims.enter_context(self.lifecycle.stored_bytes(adapter_manifest(config_sha, weights_sha)))
            return self.registry.add_adapter(
                tenant, sub.name, base, quota=self.quota, rank=config.r, lora_alpha=config.lora_alpha,
                target_modules=sorted(config.target_modules), config_sha256=config_sha, weights_sha256=weights_sha,
                size_bytes=size, status=AdapterStatus.validating, trained_with=sub.trained_with,
                description=sub.description, eval_set_sha256=eval_sha, eval_scoring=scoring,
                eval_items=len(eval_items or ()), training_metadata=training_metadata, screening=screening,
                manifest_sha256=manifest_sha)

    def _weight_screening(self, sub: AdapterSubmission, base: BaseVersion, config) -> dict:
        """Weight signals, and how they compare with the other adapters served on the same base;
        the live check adds the trigger scan and the verdict (adapters/screening/)."""
        weights = weight_signals(sub.weights_path, config)
        peers = [s["weights"] for s in self.registry.screening_on(base.id) if "weights" in s]
        return {"stage": "fine-tuning" if sub.fine_tuned else "upload", "weights": weights,
                "population": population_signals(weights, peers, min_peers=self.screening.min_population)}

    def _check_adapter_name(self, sub: AdapterSubmission) -> None:
        check_name("adapter", sub.name)
        folded = sub.name.lower()
        if folded in RESERVED_NAMES or folded.startswith(RESERVED_PREFIXES):
            raise InvalidRequestError(f"adapter name {sub.name!r} is reserved (names {list(RESERVED_NAMES)} and "
                                      f"prefixes {list(RESERVED_PREFIXES)} are used by the platform)", param="name")
        if folded.startswith(FINE_TUNED_PREFIX) and not sub.fine_tuned:
            raise InvalidRequestError(f"adapter name {sub.name!r}: the {FINE_TUNED_PREFIX!r} prefix is reserved for "
                                      "models made by fine-tuning jobs", param="name")
        if folded in {v.base_model.name.lower() for v in self.registry.list_base_versions()}:
            raise InvalidRequestError(f"adapter name {sub.name!r} is taken by a base model", param="name")

    def release_blobs(self, adapter: Adapter) -> None:
        """Delete the adapter's blobs unless another live adapter shares them (or is being stored with them)."""
        self.lifecycle.release([adapter.weights_sha256, adapter.config_sha256, adapter.eval_set_sha256,
                                adapter.manifest_sha256])

    def _check_quota(self, tenant: Tenant, new_bytes: int) -> None:
        """Fails fast, before anything is stored; add_adapter checks again atomically."""
        self.quota.check(tenant, *self.registry.tenant_usage(tenant.id), new_bytes)

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
