"""Strict parser of an untrusted PEFT ``adapter_config.json``.

We never hand an uploaded config to PEFT (whose config can name classes to import). Instead
the fields that matter are read into a pydantic model, everything unsafe or unsupported is
refused with the name of the field, and a clean config is written back out for the workers.
"""

import json

from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.format.untrusted_json import loads_untrusted
from adapters.errors import AdapterInvalidError

MAX_CONFIG_BYTES = 64 * 1024

# Fields PEFT writes that we accept only at their inert defaults (name -> accepted values).
INERT_FIELDS: dict[str, tuple] = {
    "use_dora": (False, None),
    "modules_to_save": (None, []),
    "bias": ("none",),
    "lora_bias": (False, None),
    "auto_mapping": (None, {}),
    "layer_replication": (None,),
    "use_qalora": (False, None),
    "target_parameters": (None, []),
    "trainable_token_indices": (None, {}),
    "alpha_pattern": (None, {}),
    "rank_pattern": (None, {}),
    "fan_in_fan_out": (False, None),
    "megatron_config": (None,),
    "layers_to_transform": (None,),
    "exclude_modules": (None, []),
}


class LoraConfig(BaseModel):
    """The validated subset of a PEFT LoRA config that serving depends on."""

    model_config = ConfigDict(frozen=True)

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...]
    use_rslora: bool = False

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (self.r**0.5 if self.use_rslora else self.r)

    def to_peft_json(self) -> bytes:
        """A minimal, clean adapter_config.json that PEFT and vLLM both read."""
        clean = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "target_modules": sorted(self.target_modules),
            "use_rslora": self.use_rslora,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "modules_to_save": None,
            "use_dora": False,
            "inference_mode": True,
        }
        return json.dumps(clean, indent=2, sort_keys=True).encode()


def _fail(message: str, code: str = "invalid_adapter_config") -> AdapterInvalidError:
    return AdapterInvalidError(f"adapter_config.json: {message}", code=code, param="adapter_config.json")


def check_served_targets(config: LoraConfig, served_targets: frozenset[str]) -> None:
    """``served_targets``: the modules the workers apply LoRA to; an adapter targeting another is
    refused, because vLLM would load it and silently ignore those weights (vLLM #55193). Run after
    the check against the base, whose errors are more specific (a module the base lacks)."""
    unserved = sorted(set(config.target_modules) - served_targets)
    if unserved:
        raise _fail(f"target_modules {unserved} are not served here; accepted: {sorted(served_targets)}",
                    "target_not_served")


def parse_lora_config(raw: bytes, *, max_rank: int) -> LoraConfig:
    if len(raw) > MAX_CONFIG_BYTES:
        raise _fail(f"{len(raw)} bytes exceeds the {MAX_CONFIG_BYTES}-byte limit")
    try:
        data = loads_untrusted(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError and too-deep nesting
        raise _fail(f"not valid UTF-8 JSON ({e})") from None
    if not isinstance(data, dict):
        raise _fail("must be a JSON object")

    peft_type = data.get("peft_type")
    if peft_type != "LORA":
        raise _fail(f"peft_type {peft_type!r} is not supported; accepted: 'LORA'", "unsupported_adapter_type")
    for field, accepted in INERT_FIELDS.items():
        if field in data and data[field] not in accepted:
            raise _fail(
                f"{field}={data[field]!r} is not supported; accepted: {list(accepted)}", "unsupported_adapter_feature"
            )
    targets = data.get("target_modules")
    if isinstance(targets, str):
        # PEFT treats a string as a regex over module names: we accept only a plain name.
        if not targets.replace("_", "").isalnum():
            raise _fail(f"target_modules regex {targets!r} is not supported; list the module names")
        targets = [targets]
    try:
        config = LoraConfig(
            r=data.get("r"), lora_alpha=data.get("lora_alpha", data.get("r")),
            target_modules=tuple(targets) if isinstance(targets, list) else targets,
            use_rslora=data.get("use_rslora", False) or False,
        )
    except ValidationError as e:
        first = e.errors()[0]
        raise _fail(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not config.target_modules:
        raise _fail("target_modules is empty")
    if not 1 <= config.r <= max_rank:
        raise _fail(f"rank r={config.r} is outside 1..{max_rank} (the configured maximum)", "rank_too_large")
    if not config.lora_alpha > 0:
        raise _fail(f"lora_alpha={config.lora_alpha} must be positive")
    return config
