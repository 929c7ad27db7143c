"""Weight-space signals (adapters/screening/weight_signals.py, recorded on every adapter) of the
backdoor harness's adapters.

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

from safetensors.torch import load_file  # noqa: E402

from adapters.screening.weight_signals import module_signals  # noqa: E402
from benchmarks.bench_support import CACHE, ROOT  # noqa: E402

WORK = CACHE / "backdoor"


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
