"""Training methods benchmark: LoRA, Trans-PEFT (constant and annealed), BeamLoRA, Light-PEFT
(PEFT-side, and with the base pruned too) and BeamLoRA + Trans-PEFT, at equal rank, steps and
learning rate, on the upgrade benchmark's three tasks and seeds.

Per task, method and seed: exact match on v1 (held-out items), training seconds, peak GPU
memory (CUDA only), trainable parameters, the served adapter's size and non-zero parameters, and
exact match after moving the adapter unchanged to each v2 (the upgrade benchmark's base updates);
LoRA re-trained on each v2 is the upper bound for "gap closed". Methods are compared with plain
LoRA per seed (paired over items, McNemar) and across seeds with the seed as the unit
(benchmarks/paired_stats.py).

    .venv/bin/python benchmarks/training_methods.py                 # the full grid (CUDA: ~8 min)
    .venv/bin/python benchmarks/training_methods.py --reduced       # 2-core CPU: one task, one seed
    .venv/bin/python benchmarks/training_methods.py --reduced --seeds 3 --resume --methods lora trans-peft \
        trans-peft-anneal beamlora light-peft                          # two more seeds of five methods
    .venv/bin/python benchmarks/training_methods.py --report-only --out benchmarks/results/training_methods-gpu.json

On a CUDA machine without vLLM or this project's server dependencies, give ``--gguf`` (the demo
GGUF) and ``--commit``; everything here needs only torch, transformers, peft, pydantic and gguf.
Writes the JSON after every run (``--budget-s`` stops starting new runs in time) and a PNG.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.bench_support import run_metadata  # noqa: E402
from benchmarks.paired_stats import compare, describe  # noqa: E402
from benchmarks.upgrade.base_update import UpdateConfig, updated_base  # noqa: E402
from benchmarks.upgrade.scoring import AdapterScorer, accuracy  # noqa: E402
from benchmarks.upgrade.tasks import ALL_TASKS  # noqa: E402
from benchmarks.upgrade.training_cache import TrainingPlan, train_cached  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "bench" / "training-methods"
METHODS = {  # name -> TrainingConfig fields
    "lora": {"method": "lora"},
    "trans-peft": {"method": "trans-peft"},
    "trans-peft-anneal": {"method": "trans-peft", "weakening_schedule": "anneal"},
    "beamlora": {"method": "beamlora"},
    "light-peft": {"method": "light-peft"},
    "light-peft-base": {"method": "light-peft", "light_prune_base": True},
    "beamlora+trans-peft": {"method": "beamlora+trans-peft"},
}
UPDATES = ["ffn:1e-3:45", "ffn:2e-3:45", "all:1e-3:45"]


def log(message: str) -> None:
    print(message, flush=True)


def flags_str(flags: list[bool]) -> str:
    return "".join("1" if f else "0" for f in flags)


def flags_of(text: str) -> list[bool]:
    return [c == "1" for c in text]


def versions(commit: str | None) -> dict:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}"
    return {**run_metadata(commit), "device": device, "torch_threads": torch.get_num_threads()}


def base_dir(args) -> Path:
    if args.gguf is None:
        from benchmarks.bench_support import CACHE, demo_base_dir

        return demo_base_dir(CACHE / "base-data")
    from migration.base_versions.gguf_import import convert_gguf

    out = WORK / "v1"
    if not (out / "config.json").is_file():
        convert_gguf(args.gguf, out)
    return out


def adapter_size(adapter: Path) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    return {"bytes": (adapter / "adapter_model.safetensors").stat().st_size,
            "nonzero": sum(int((t != 0).sum()) for t in tensors.values())}


def run_grid(args, results: dict, save) -> None:
    from transformers import AutoTokenizer

    v1 = base_dir(args)
    tokenizer = AutoTokenizer.from_pretrained(v1)
    updates = []
    for spec in args.updates:
        config = UpdateConfig.parse(spec)
        folder, info = updated_base(v1, WORK, config, log=log)
        updates.append((config.label, folder))
        results["updates"][config.label] = {k: info[k] for k in ("held_out_loss_before", "held_out_loss_after")}
    plan = TrainingPlan(rank=args.rank, steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size)
    tasks = {name: ALL_TASKS[name](args.n_train, args.n_eval) for name in args.tasks}
    scorer = AdapterScorer(tokenizer)
    started = time.perf_counter()
    runs = results["runs"]

    def out_of_time() -> bool:
        if args.budget_s and time.perf_counter() - started > args.budget_s:
            results["incomplete"] = True
            return True
        return False

    def done(kind: str, task: str, method: str, seed: int, base: str = "v1") -> bool:
        return any((r["kind"], r["task"], r["method"], r["seed"], r["base"]) == (kind, task, method, seed, base)
                   for r in runs)

    like = None
    for row in runs:  # rows of a resumed run saved before the loop's own time was kept: from the cache
        if row["kind"] == "trained" and "loop_seconds" not in row and row["task"] in tasks:
            cached = train_cached(WORK, v1, tasks[row["task"]], plan, seed=row["seed"], **METHODS[row["method"]])
            row["loop_seconds"] = cached.record.get("seconds")
    for seed in range(args.seeds):
        for name, task in tasks.items():
            if not done("bare", name, "-", 0) and like is not None:
                for label, folder in [("v1", v1), *updates]:
                    runs.append({"kind": "bare", "task": name, "method": "-", "seed": 0, "base": label,
                                 "flags": flags_str(scorer.score(folder, None, task.eval, like=like))})
            for method in args.methods:
                if done("trained", name, method, seed) or out_of_time():
                    continue
                trained = train_cached(WORK, v1, task, plan, seed=seed, **METHODS[method])
                like = like or trained.adapter
                row = {"kind": "trained", "task": name, "method": method, "seed": seed, "base": "v1",
                       "seconds": trained.seconds, "loop_seconds": trained.record.get("seconds"),
                       "peak_gpu_bytes": trained.record.get("peak_gpu_bytes"),
                       "trainable_parameters": trained.record.get("trainable_parameters"),
                       "adapter": adapter_size(trained.adapter),
                       "flags": flags_str(scorer.score(v1, trained.adapter, task.eval, like=like)), "moved": {}}
                for label, folder in updates:
                    row["moved"][label] = flags_str(scorer.score(folder, trained.adapter, task.eval, like=like))
                runs.append(row)
                save()
                log(f"  seed {seed} {name:<14} {method:<20} v1 {accuracy(flags_of(row['flags'])):.3f} moved "
                    + " ".join(f"{accuracy(flags_of(f)):.3f}" for f in row["moved"].values())
                    + f"  {trained.seconds:.1f}s")
        if seed == 0:  # the re-trained bound once, before the other seeds, so a short budget still has it
            for name, task in tasks.items():
                for label, folder in updates:
                    if done("retrained", name, "lora", 0, label) or out_of_time():
                        continue
                    trained = train_cached(WORK, folder, task, plan, seed=0, method="lora")
                    runs.append({"kind": "retrained", "task": name, "method": "lora", "seed": 0, "base": label,
                                 "flags": flags_str(scorer.score(folder, trained.adapter, task.eval, like=like))})
                    save()
            for name, task in tasks.items():  # bare bases, if the first run came before ``like`` existed
                if not done("bare", name, "-", 0):
                    for label, folder in [("v1", v1), *updates]:
                        runs.append({"kind": "bare", "task": name, "method": "-", "seed": 0, "base": label,
                                     "flags": flags_str(scorer.score(folder, None, task.eval, like=like))})
            save()


def summarize(results: dict) -> dict:
    runs = results["runs"]
    summary = {}
    tasks = sorted({r["task"] for r in runs}, key=lambda t: list(ALL_TASKS).index(t))
    for task in tasks:
        trained = [r for r in runs if r["task"] == task and r["kind"] == "trained"]
        methods = [m for m in METHODS if any(r["method"] == m for r in trained)]
        lora = {r["seed"]: r for r in trained if r["method"] == "lora"}
        retrained = {r["base"]: accuracy(flags_of(r["flags"])) for r in runs
                     if r["task"] == task and r["kind"] == "retrained"}
        bare = {r["base"]: accuracy(flags_of(r["flags"])) for r in runs if r["task"] == task and r["kind"] == "bare"}
        per_method = {}
        for method in methods:
            rows = sorted((r for r in trained if r["method"] == method), key=lambda r: r["seed"])
            paired = [r for r in rows if r["seed"] in lora]
            entry = {"seeds": [r["seed"] for r in rows],
                     "v1": [accuracy(flags_of(r["flags"])) for r in rows],
                     "seconds": [r["seconds"] for r in rows],
                     "speedup_vs_lora": [lora[r["seed"]]["seconds"] / r["seconds"] for r in paired],
                     "loop_speedup_vs_lora": [lora[r["seed"]]["loop_seconds"] / r["loop_seconds"] for r in paired
                                              if r.get("loop_seconds") and lora[r["seed"]].get("loop_seconds")],
                     "peak_gpu_bytes": [r["peak_gpu_bytes"] for r in rows],
                     "trainable_parameters": rows[0]["trainable_parameters"],
                     "adapter_bytes": rows[0]["adapter"]["bytes"],
                     "adapter_nonzero": statistics.mean(r["adapter"]["nonzero"] for r in rows),
                     "moved": {}, "gap_closed": {}}
            if method != "lora" and paired:
                entry["v1_vs_lora"] = compare([flags_of(r["flags"]) for r in paired],
                                              [flags_of(lora[r["seed"]]["flags"]) for r in paired])
            for label in rows[0]["moved"]:
                moved = [accuracy(flags_of(r["moved"][label])) for r in rows]
                entry["moved"][label] = moved
                lora_moved = statistics.mean(accuracy(flags_of(lora[s]["moved"][label])) for s in lora)
                upper = retrained.get(label)
                entry["gap_closed"][label] = ((statistics.mean(moved) - lora_moved) / (upper - lora_moved)
                                              if upper is not None and upper - lora_moved >= 0.1 else None)
                if method != "lora" and paired:
                    entry.setdefault("moved_vs_lora", {})[label] = compare(
                        [flags_of(r["moved"][label]) for r in paired],
                        [flags_of(lora[r["seed"]]["moved"][label]) for r in paired])
            per_method[method] = entry
        summary[task] = {"bare": bare, "retrained": retrained, "methods": per_method}
    return summary


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.mean(values):.3f}" + (f"+-{statistics.stdev(values):.3f}" if len(values) > 1 else "")


def print_tables(results: dict) -> None:
    summary = results["summary"]
    meta = results["versions"]
    print(f"\n{meta['device']}; torch {meta['torch']}, transformers {meta['transformers']}, peft {meta['peft']}; "
          f"commit {meta['commit'][:10]}" + ("; INCOMPLETE (budget ran out)" if results.get("incomplete") else ""))
    for task, s in summary.items():
        labels = list(next(iter(s["methods"].values()))["moved"])
        print(f"\n{task}: bare v1 {s['bare'].get('v1', 0):.3f}; re-trained LoRA on "
              + ", ".join(f"[{k}] {v:.3f}" for k, v in s["retrained"].items()))
        print(f"  {'method':<20} {'v1':>12} {'s/run':>6} {'x LoRA':>6} {'loop x':>6} {'peak GB':>7} {'trainable':>9} "
              f"{'nonzero':>8}  " + "  ".join(f"{'moved ' + k:>22}" for k in labels) + "  v1 - LoRA")
        for method, e in s["methods"].items():
            peak = [p / 2**30 for p in e["peak_gpu_bytes"] if p]
            moved = "  ".join(f"{mean_sd(e['moved'][k]):>13} gap {_pct(e['gap_closed'][k]):>4}" for k in labels)
            print(f"  {method:<20} {mean_sd(e['v1']):>12} {statistics.mean(e['seconds']):>6.1f} "
                  f"{statistics.mean(e['speedup_vs_lora'] or [float('nan')]):>6.2f} "
                  f"{statistics.mean(e['loop_speedup_vs_lora'] or [float('nan')]):>6.2f} "
                  f"{(f'{max(peak):.2f}' if peak else '-'):>7} {e['trainable_parameters']:>9} "
                  f"{int(e['adapter_nonzero']):>8}  {moved}  "
                  + (describe(e["v1_vs_lora"]) if "v1_vs_lora" in e else ""))
    print("\nmoved to each v2, method - LoRA (95% CI over seeds; McNemar per seed):")
    for task, s in summary.items():
        for method, e in s["methods"].items():
            for label, c in e.get("moved_vs_lora", {}).items():
                print(f"  {task:<14} {method:<20} [{label}] {describe(c)}")


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def chart(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    tasks = list(summary)
    methods = [m for m in METHODS if all(m in summary[t]["methods"] for t in tasks)]
    labels = ["v1", *next(iter(summary[tasks[0]]["methods"].values()))["moved"]]
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.6), dpi=90, squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, label in zip(axes.flat, labels):
        for k, method in enumerate(methods):
            values = [summary[t]["methods"][method]["v1" if label == "v1" else "moved"] for t in tasks]
            values = [v if label == "v1" else v[label] for v in values]
            ax.bar([i + (k - len(methods) / 2 + 0.5) * width for i in range(len(tasks))],
                   [statistics.mean(v) for v in values], width,
                   yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in values], capsize=2, label=method)
        ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title("trained and scored on v1" if label == "v1" else f"moved to v2 [{label}]", fontsize=9)
    axes.flat[0].legend(fontsize=7)
    axes.flat[0].set_ylabel("exact match (held-out)")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["word_reversal", "stdlib_module", "html_entity"],
                        choices=list(ALL_TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=None, help="3, or 1 with --reduced")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-eval", type=int, default=160)
    parser.add_argument("--updates", nargs="+", default=UPDATES, help="params:lr:steps per v2")
    parser.add_argument("--reduced", action="store_true", help="the 2-core CPU grid: word_reversal, seed 0")
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few steps, few items)")
    parser.add_argument("--budget-s", type=float, default=0, help="start no new run after this many seconds")
    parser.add_argument("--gguf", type=Path, default=None, help="the demo GGUF (where the server is not installed)")
    parser.add_argument("--commit", default=None, help="the commit, where the tree has no .git")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out; run only the rest "
                        "(same settings; a GPU session can carry on where the last one's budget ended)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    suffix = "gpu" if torch.cuda.is_available() else "cpu"
    if args.reduced:
        args.tasks, args.updates = ["word_reversal"], ["ffn:2e-3:45", "all:1e-3:45"]
    args.seeds = args.seeds or (1 if args.reduced else 3)
    if args.quick:
        args.tasks, args.seeds, args.steps, args.n_train, args.n_eval = ["word_reversal"], 1, 6, 16, 16
        args.updates = ["ffn:1e-3:2"]
    default_out = WORK / "quick.json" if args.quick else ROOT / "benchmarks" / "results" / f"training_methods-{suffix}.json"
    args.out = args.out or default_out
    if args.report_only:
        results = json.loads(args.out.read_text())
    else:
        results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "versions": versions(args.commit), "updates": {}, "runs": []}
        if args.resume and args.out.is_file():
            earlier = json.loads(args.out.read_text())
            if earlier["versions"]["device"] != results["versions"]["device"]:
                parser.error(f"--resume: {args.out} was measured on {earlier['versions']['device']}")
            results["runs"], results["resumed_from"] = earlier["runs"], earlier["versions"]
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            args.out.write_text(json.dumps(results, indent=1))

        run_grid(args, results, save)
    results["summary"] = summarize(results)
    args.out.write_text(json.dumps(results, indent=1))
    print_tables(results)
    chart(results, args.out.with_suffix(".png"))
    log(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
