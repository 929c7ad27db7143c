"""Check a LoRA adapter's actual tensors against the base model it claims to fit.

Validation reads the tensor keys and shapes of the weight file, not the config's promises:
vLLM accepts an adapter whose module names match nothing and then silently serves base
output, so an adapter is valid only if every tensor lands on a real module of the base with
the right shape, and every module the config targets has its weights.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from adapters.format.peft_config import LoraConfig
from adapters.format.safetensors_header import SafetensorsHeader
from adapters.format.base_architecture import BaseArchitecture
from adapters.errors import AdapterInvalidError

KEY_PATTERN = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.weight$")


@dataclass(frozen=True)
class AdapterShape:
    modules: tuple[str, ...]  # base module names the adapter modifies
    parameter_count: int


def _fail(message: str, code: str) -> AdapterInvalidError:
    return AdapterInvalidError(message, code=code, param="adapter_model.safetensors")


def check_against_base(config: LoraConfig, header: SafetensorsHeader, base: BaseArchitecture) -> AdapterShape:
    targets = set(config.target_modules)
    found: dict[str, set[str]] = {}
    for key, info in sorted(header.tensors.items()):
        match = KEY_PATTERN.match(key)
        if not match:
            raise _fail(f"tensor {key!r} is not a LoRA A/B weight (expected base_model.model.<module>.lora_A|lora_B.weight)",
                        "unexpected_tensor")
        module, kind = match["module"], match["kind"]
        if module not in base.linear_modules:
            raise _fail(f"tensor {key!r}: module {module!r} does not exist in the base model ({base.model_type})",
                        "unknown_module")
        if module.rsplit(".", 1)[-1] not in targets:
            raise _fail(f"tensor {key!r}: module {module!r} is not in target_modules {sorted(targets)}",
                        "tensor_without_target")
        out_features, in_features = base.linear_modules[module]
        expected = (config.r, in_features) if kind == "lora_A" else (out_features, config.r)
        if info.shape != expected:
            raise _fail(f"tensor {key!r} has shape {list(info.shape)}, expected {list(expected)} "
                        f"(rank {config.r}, module {out_features}x{in_features})", "shape_mismatch")
        found.setdefault(module, set()).add(kind)

    for target in sorted(targets):
        base_modules = [m for m in base.linear_modules if m.rsplit(".", 1)[-1] == target]
        if not base_modules:
            raise _fail(f"target module {target!r} matches no module of the base model ({base.model_type})",
                        "unknown_target_module")
        missing = [m for m in base_modules if found.get(m) != {"lora_A", "lora_B"}]
        if missing:
            raise _fail(f"target module {target!r}: {len(missing)} module(s) lack lora_A/lora_B weights, "
                        f"first {missing[0]!r}", "missing_weights")
    params = sum(_numel(i.shape) for i in header.tensors.values())
    return AdapterShape(tuple(sorted(found)), params)


def check_finite(weights_path: Path) -> None:
    """Load each tensor (only after the header checks passed) and refuse NaN or Inf."""
    with safe_open(str(weights_path), framework="pt") as f:
        for key in f.keys():
            tensor = f.get_tensor(key)
            if not torch.isfinite(tensor).all():
                raise _fail(f"tensor {key!r} contains NaN or Inf values", "non_finite_weights")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
