"""Weight-space signals of a LoRA adapter, recorded on it for screening (docs/SECURITY.md).

Per module, dW = scaling * B A: its Frobenius norm and its spectral concentration (the top
singular value's share of the squared singular values; 1.0 = a rank-one update), computed from
the r x r core of B A so no out x in matrix is built. Recorded, not judged: on the backdoor
harness's adapters these numbers did not tell a poisoned adapter from a clean one, so no policy
acts on them yet.
"""

import statistics
from pathlib import Path

import torch
from safetensors import safe_open

from adapters.format.peft_config import LoraConfig

LORA_A = ".lora_A.weight"


def module_signals(a: torch.Tensor, b: torch.Tensor, scaling: float) -> dict[str, float]:
    """a: (r, in), b: (out, r)."""
    _, r_b = torch.linalg.qr(b.double())  # b = Q_b R_b, R_b: (r, r)
    _, r_a = torch.linalg.qr(a.double().T)  # a^T = Q_a R_a, R_a: (r, r)
    s = torch.linalg.svdvals(scaling * r_b @ r_a.T)  # (r,): the singular values of dW
    energy = float((s ** 2).sum())
    return {"norm": energy ** 0.5, "concentration": float(s[0] ** 2) / energy if energy else 0.0}


def weight_signals(weights_path: Path, config: LoraConfig) -> dict:
    """Summary over modules, plus the module with the largest update. Run after the static
    checks, so every A has its B and the shapes agree."""
    per = {}
    with safe_open(str(weights_path), framework="pt") as f:
        keys = set(f.keys())
        for key in sorted(k for k in keys if k.endswith(LORA_A)):
            module = key.removesuffix(LORA_A)
            per[module] = module_signals(f.get_tensor(key).float(), f.get_tensor(f"{module}.lora_B.weight").float(),
                                         config.scaling)
    norms = {m: s["norm"] for m, s in per.items()}
    largest = max(norms, key=norms.get)
    return {"modules": len(per), "max_norm": norms[largest], "mean_norm": statistics.mean(norms.values()),
            "largest_module": largest.removeprefix("base_model.model."),
            "max_concentration": max(s["concentration"] for s in per.values()),
            "mean_concentration": statistics.mean(s["concentration"] for s in per.values())}
