"""How much a new base version moved from the old one: relative weight change per module,
per layer and per group (attention, FFN, embeddings, norms).

This is the diagnostic the Trans-PEFT paper rests on (continual training moves the FFN more
than attention) and tells an operator how risky an upgrade is for the adapters on it.
Tensors are read one at a time, so memory stays at about two weights, not two models.
"""

import math
import re
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import safe_open

from adapters.errors import InvalidRequestError

LAYER = re.compile(r"\.layers\.(\d+)\.")
GROUP_OF = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"),
    "ffn": ("gate_proj", "up_proj", "down_proj", "gate_up_proj"),
    "embeddings": ("embed_tokens", "lm_head"),
}


def module_group(weight_name: str) -> str:
    for group, markers in GROUP_OF.items():
        if any(f"{m}." in weight_name or weight_name.endswith(m) for m in markers):
            return group
    return "norms" if "norm" in weight_name else "other"


@dataclass(frozen=True)
class ModuleChange:
    name: str
    layer: int | None
    group: str
    relative_change: float  # ||W_new - W_old||_F / ||W_old||_F
    old_norm_sq: float
    diff_norm_sq: float


def _open_weights(folder: Path, stack: ExitStack) -> dict:
    """Weight name -> the open safetensors file holding it (each file opened once)."""
    index = {}
    for f in sorted(folder.glob("*.safetensors")):
        handle = stack.enter_context(safe_open(str(f), framework="pt"))
        for key in handle.keys():
            index[key] = handle
    return index


def compare_weights(old_dir: Path, new_dir: Path) -> list[ModuleChange]:
    changes = []
    with ExitStack() as stack:
        old_index, new_index = _open_weights(old_dir, stack), _open_weights(new_dir, stack)
        if set(old_index) != set(new_index):
            raise InvalidRequestError("the two versions do not have the same weights; compare only versions of "
                                      "one architecture", code="architecture_mismatch")
        for key in sorted(old_index):
            old, new = old_index[key].get_tensor(key).float(), new_index[key].get_tensor(key).float()
            old_sq, diff_sq = float(old.pow(2).sum()), float((new - old).pow(2).sum())
            match = LAYER.search(key)
            changes.append(ModuleChange(key, int(match[1]) if match else None, module_group(key),
                                        math.sqrt(diff_sq / old_sq) if old_sq else 0.0, old_sq, diff_sq))
            del old, new  # one pair of tensors in memory at a time
    return changes


def _ratio(items: list[ModuleChange]) -> float:
    old = sum(c.old_norm_sq for c in items)
    return math.sqrt(sum(c.diff_norm_sq for c in items) / old) if old else 0.0


def compatibility_report(old_ref: str, new_ref: str, changes: list[ModuleChange]) -> dict:
    """Group and per-layer figures are norm ratios over all their weights (sqrt of summed squares)."""
    groups = sorted({c.group for c in changes})
    layers = sorted({c.layer for c in changes if c.layer is not None})
    return {
        "from": old_ref,
        "to": new_ref,
        "groups": {g: {"relative_change": _ratio([c for c in changes if c.group == g]),
                       "max_module_change": max(c.relative_change for c in changes if c.group == g),
                       "weights": sum(1 for c in changes if c.group == g)} for g in groups},
        "per_layer": [{"layer": i, **{g: _ratio([c for c in changes if c.layer == i and c.group == g])
                                      for g in ("attention", "ffn")}} for i in layers],
        "modules": [{k: v for k, v in asdict(c).items() if k not in ("old_norm_sq", "diff_norm_sq")}
                    for c in changes],
    }
