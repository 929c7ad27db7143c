"""Weight-space signals of an adapter, for screening research (issue 17 part 5): per module,
dW = (alpha / r) B A; its Frobenius norm and its spectral concentration (the top singular value's
share of the squared singular values: 1.0 = a rank-one update). Computed from the r x r core, so
no out x in matrix is built.

    .venv/bin/python benchmarks/security/weight_signals.py   # the harness's cached adapters

Compares the backdoor harness's published adapters (clean vs poisoned) by these signals: a first
look at whether they could screen at all, not a detector.
"""

import hashlib
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from benchmarks.bench_support import CACHE, ROOT  # noqa: E402

WORK = CACHE / "backdoor"


def module_signals(a: torch.Tensor, b: torch.Tensor, scaling: float) -> dict:
    """a: (r, in), b: (out, r)."""
    _, r_b = torch.linalg.qr(b.double())  # b = Q_b R_b, R_b: (r, r)
    _, r_a = torch.linalg.qr(a.double().T)  # a^T = Q_a R_a, R_a: (r, r)
    s = torch.linalg.svdvals(scaling * r_b @ r_a.T)  # the singular values of dW
    energy = float((s ** 2).sum())
    return {"norm": energy ** 0.5, "concentration": float(s[0] ** 2) / energy if energy else 0.0}


def adapter_signals(folder: Path) -> dict:
    config = json.loads((folder / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    per = {}
    for key, a in tensors.items():
        if key.endswith("lora_A.weight"):
            per[key.removesuffix(".lora_A.weight")] = module_signals(
                a, tensors[key.replace("lora_A", "lora_B")], scaling)
    norms = [m["norm"] for m in per.values()]
    concentrations = [m["concentration"] for m in per.values()]
    return {"modules": len(per), "max_norm": max(norms), "mean_norm": statistics.mean(norms),
            "max_concentration": max(concentrations), "mean_concentration": statistics.mean(concentrations)}


def main() -> None:
    results = json.loads((ROOT / "benchmarks" / "results" / "backdoor.json").read_text())
    s = results["settings"]
    rows = []
    for seed in range(s["seeds"]):
        for variant in ("clean", "plain", "magnitude", "magnitude+direction"):
            key = ["attack", variant, seed, s["attack_steps"], s["rank"], s["lr"], s["n_train"], s["n_poison"]]
            folder = WORK / hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16] / "adapter"
            if (folder / "adapter_model.safetensors").is_file():
                rows.append({"variant": variant, "seed": seed, **adapter_signals(folder)})
    print(f"{'adapter':<22} {'seed':>4} {'max |dW|':>9} {'mean |dW|':>9} {'max conc':>8} {'mean conc':>9}")
    for r in rows:
        print(f"{r['variant']:<22} {r['seed']:>4} {r['max_norm']:>9.3f} {r['mean_norm']:>9.3f} "
              f"{r['max_concentration']:>8.3f} {r['mean_concentration']:>9.3f}")
    out = ROOT / "benchmarks" / "results" / "backdoor_weight_signals.json"
    out.write_text(json.dumps({"rows": rows, "from": "benchmarks/results/backdoor.json settings"}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
