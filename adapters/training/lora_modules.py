"""The PEFT LoRA layers of a model by base-module name, and writing a plain uniform-rank LoRA
folder from tensors (what BeamLoRA and Light-PEFT both end with)."""

import json
from pathlib import Path

import torch
from torch import nn

PEFT_PREFIX = "base_model.model."


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{"model.layers.0.self_attn.q_proj": peft LoRA Linear, ...}`` in model order."""
    from peft.tuners.lora import LoraLayer

    return {name.removeprefix(PEFT_PREFIX): module for name, module in model.named_modules()
            if isinstance(module, LoraLayer) and "default" in module.lora_A}


def lora_weights(layer: nn.Module) -> tuple[nn.Parameter, nn.Parameter]:
    """(A (r, in), B (out, r)) of the default adapter."""
    return layer.lora_A["default"].weight, layer.lora_B["default"].weight


def write_plain_lora(out: Path, tensors: dict[str, tuple[torch.Tensor, torch.Tensor]], *, rank: int,
                     lora_alpha: float, target_modules: list[str]) -> Path:
    """``tensors``: base module name -> (A (rank, in), B (out, rank)). Writes the two files PEFT and
    vLLM read, with only the keys a plain LoRA has (no method-specific fields)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    flat = {}
    for name, (a, b) in tensors.items():
        flat[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a.detach().to("cpu", torch.float32).contiguous()
        flat[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b.detach().to("cpu", torch.float32).contiguous()
    save_file(flat, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": lora_alpha,
              "target_modules": sorted(target_modules), "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
              "use_dora": False, "fan_in_fan_out": False, "modules_to_save": None, "inference_mode": True}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out
