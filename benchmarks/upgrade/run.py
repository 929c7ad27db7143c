"""Upgrade benchmark: do adapters keep their gains across a base update, with and without Trans-PEFT?

v1 is SmolLM2-135M-Instruct; v2 is v1 continually trained on Python's standard-library source
(benchmarks/upgrade/base_update.py). For each task (benchmarks/upgrade/tasks.py) and seed, with
equal rank, steps and learning rate: plain LoRA and Trans-PEFT trained on v1 and scored on v1;
both moved directly to v2 (the same weights, no training); LoRA re-trained on v2 (the upper
bound); bare v1 and v2. Next to each moved adapter: the migration gate's decision (the
product's own measure/decide with its default thresholds) and whether the adapter really kept
its gain. Then a sweep over Trans-PEFT's p_m and p_c on the first task.

    .venv/bin/python benchmarks/upgrade/run.py            # sized for a 2-core CPU; faster on a GPU
    .venv/bin/python benchmarks/upgrade/run.py --quick    # a smoke run

Writes benchmarks/results/upgrade.json and upgrade.png; trained adapters and v2 are cached in
.cache/bench/upgrade/, so a rerun only evaluates.
"""

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch  # noqa: E402

from benchmarks.bench_support import CACHE, ROOT, demo_base_dir  # noqa: E402
from benchmarks.upgrade.base_update import UpdateConfig, updated_base  # noqa: E402
from benchmarks.upgrade.scoring import accuracy, answer_flags  # noqa: E402
from benchmarks.upgrade.tasks import ALL_TASKS, Task  # noqa: E402
from migration.compatibility.weight_change import compare_weights, compatibility_report  # noqa: E402
from migration.validation_gate.gate import GateThresholds, decide, measure  # noqa: E402

WORK = CACHE / "upgrade"


def log(message: str) -> None:
    print(message, flush=True)


def train_adapter(base_dir: Path, task: Task, *, method: str, seed: int, args, p_m: float = 0.1,
                  p_c: float = 0.1) -> tuple[Path, float]:
    """A LoRA trained by the product's own trainer (cached); returns (folder, training seconds)."""
    from adapters.training.config import TrainingConfig
    from adapters.training.run import prepare, run_training

    config = TrainingConfig(method=method, p_m=p_m, p_c=p_c, rank=args.rank, max_steps=args.steps,
                            learning_rate=args.lr, batch_size=args.batch_size, held_out_fraction=0.0, seed=seed,
                            checkpoint_every=args.steps)
    key = hashlib.sha256(json.dumps([str(base_dir), task.name, config.model_dump(), args.n_train]).encode())
    work = WORK / "adapters" / key.hexdigest()[:16]
    done = work / "done.json"
    if done.is_file():
        return work / "adapter", json.loads(done.read_text())["seconds"]
    jsonl = lambda rows: "".join(json.dumps({"prompt": e.prompt, "completion": e.answer}) + "\n"  # noqa: E731
                                 for e in rows).encode()
    started = time.perf_counter()
    data = prepare(base_dir, jsonl(task.train), jsonl(task.eval), config)
    result = run_training(base_dir, data, config, work)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"seconds": seconds}))
    return result.adapter_dir, seconds


def score(base_dir: Path, adapter: Path | None, task: Task, tokenizer) -> list[bool]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return answer_flags(model, tokenizer, task.eval)


def gate(reference: list[bool], floor: list[bool], candidate: list[bool]) -> dict:
    """The migration service's verdict on these scores (right answers as outputs, wrong as '')."""
    outputs = lambda flags: ["ok" if f else "" for f in flags]  # noqa: E731
    evidence = measure(outputs(reference), outputs(candidate), floor_outputs=outputs(floor),
                       expected=["ok"] * len(reference))
    verdict = decide(evidence, GateThresholds())
    return {"decision": verdict.decision, "reasons": verdict.reasons, "gain_kept": evidence.gain_kept,
            "retention": evidence.retention}


def kept_gain(reference: float, floor: float, candidate: float) -> float | None:
    return (candidate - floor) / (reference - floor) if reference - floor > 0.05 else None


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_task(task: Task, v1: Path, v2: Path, tokenizer, args) -> dict:
    log(f"task {task.name}: {len(task.train)} train / {len(task.eval)} eval examples")
    bare_v1, bare_v2 = score(v1, None, task, tokenizer), score(v2, None, task, tokenizer)
    seeds = []
    for seed in range(args.seeds):
        lora, lora_s = train_adapter(v1, task, method="lora", seed=seed, args=args)
        tp, tp_s = train_adapter(v1, task, method="trans-peft", seed=seed, args=args)
        retrained, retrain_s = train_adapter(v2, task, method="lora", seed=seed, args=args)
        started = time.perf_counter()
        flags = {"lora_v1": score(v1, lora, task, tokenizer), "trans_peft_v1": score(v1, tp, task, tokenizer),
                 "lora_direct_v2": score(v2, lora, task, tokenizer),
                 "trans_peft_direct_v2": score(v2, tp, task, tokenizer)}
        migrate_s = (time.perf_counter() - started) / 2  # one adapter: its old and new scores
        flags["lora_retrained_v2"] = score(v2, retrained, task, tokenizer)
        acc = {k: accuracy(v) for k, v in flags.items()}
        floor = accuracy(bare_v2)
        row = {"seed": seed, **acc, "train_s": {"lora": lora_s, "trans_peft": tp_s, "retrain": retrain_s},
               "migrate_s": migrate_s,
               "gate": {"lora": gate(flags["lora_v1"], bare_v2, flags["lora_direct_v2"]),
                        "trans_peft": gate(flags["trans_peft_v1"], bare_v2, flags["trans_peft_direct_v2"])},
               "gain_kept": {"lora": kept_gain(acc["lora_v1"], floor, acc["lora_direct_v2"]),
                             "trans_peft": kept_gain(acc["trans_peft_v1"], floor, acc["trans_peft_direct_v2"])}}
        log(f"  seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
        seeds.append(row)
    conditions = ["lora_v1", "trans_peft_v1", "lora_direct_v2", "trans_peft_direct_v2", "lora_retrained_v2"]
    summary = {c: mean_sd([s[c] for s in seeds]) for c in conditions}
    summary["bare_v1"], summary["bare_v2"] = (accuracy(bare_v1), 0.0), (accuracy(bare_v2), 0.0)
    direct, tp, upper = (summary[c][0] for c in ("lora_direct_v2", "trans_peft_direct_v2", "lora_retrained_v2"))
    gap_closed = (tp - direct) / (upper - direct) if upper - direct > 0.02 else None
    return {"task": task.name, "n_train": len(task.train), "n_eval": len(task.eval), "seeds": seeds,
            "summary": summary, "gap_closed_by_trans_peft": gap_closed}


def sweep(task: Task, v1: Path, v2: Path, tokenizer, args) -> list[dict]:
    rows = []
    for p_m, p_c in args.sweep:
        adapter, seconds = train_adapter(v1, task, method="trans-peft", seed=0, args=args, p_m=p_m, p_c=p_c)
        rows.append({"p_m": p_m, "p_c": p_c, "v1": accuracy(score(v1, adapter, task, tokenizer)),
                     "direct_v2": accuracy(score(v2, adapter, task, tokenizer)), "train_s": seconds})
        log(f"  sweep p_m={p_m} p_c={p_c}: v1 {rows[-1]['v1']:.3f}, direct v2 {rows[-1]['direct_v2']:.3f}")
    return rows


def chart(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [("bare_v2", "bare v2"), ("lora_v1", "LoRA on v1"), ("lora_direct_v2", "LoRA moved to v2"),
              ("trans_peft_direct_v2", "Trans-PEFT moved to v2"), ("lora_retrained_v2", "re-trained on v2")]
    tasks = results["tasks"]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    width = 0.16
    for k, (key, label) in enumerate(labels):
        means = [t["summary"][key][0] for t in tasks]
        sds = [t["summary"][key][1] for t in tasks]
        ax.bar([i + (k - 2) * width for i in range(len(tasks))], means, width, yerr=sds, capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), [t["task"] for t in tasks])
    ax.set_ylabel("exact match on held-out examples")
    update = results["update"]
    ax.set_title(f"SmolLM2-135M v1 -> v2 ({update['config']['params']} update, held-out loss "
                 f"{update['held_out_loss_before']:.3f} -> {update['held_out_loss_after']:.3f})")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=list(ALL_TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=120, help="LoRA training steps (equal for every method)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-eval", type=int, default=120)
    parser.add_argument("--update-params", choices=["ffn", "all"], default="ffn")
    parser.add_argument("--update-lr", type=float, default=3e-4)
    parser.add_argument("--update-steps", type=int, default=60)
    parser.add_argument("--sweep", type=lambda s: tuple(float(x) for x in s.split(",")), nargs="*",
                        default=[(0.0, 0.1), (0.1, 0.0), (0.3, 0.1), (0.1, 0.3)], help="p_m,p_c pairs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "upgrade.json")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seeds, args.steps, args.n_train, args.n_eval = ["word_reversal"], 1, 4, 16, 8
        args.update_steps, args.sweep = 2, [(0.3, 0.3)]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from transformers import AutoTokenizer

    started = time.perf_counter()
    v1 = demo_base_dir(CACHE / "base-data")
    update = UpdateConfig(params=args.update_params, learning_rate=args.update_lr, steps=args.update_steps)
    log(f"v2: {args.update_params} update, lr {args.update_lr}, {args.update_steps} steps (cached once trained)")
    v2, update_info = updated_base(v1, WORK, update, log=log)
    change = compatibility_report("v1", "v2", compare_weights(v1, v2))["groups"]
    log("weight change: " + ", ".join(f"{g} {c['relative_change']:.2%}" for g, c in change.items()))
    log(f"held-out loss on unseen stdlib files: {update_info['held_out_loss_before']:.3f} -> "
        f"{update_info['held_out_loss_after']:.3f}")
    tokenizer = AutoTokenizer.from_pretrained(v1)
    tasks = [ALL_TASKS[name](args.n_train, args.n_eval) for name in args.tasks]
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "update": update_info, "weight_change": change,
               "tasks": [run_task(task, v1, v2, tokenizer, args) for task in tasks]}
    log(f"sweep over p_m, p_c on {tasks[0].name}, seed 0:")
    results["sweep"] = sweep(tasks[0], v1, v2, tokenizer, args)
    results["seconds"] = time.perf_counter() - started

    print(f"\n{'task':<14} {'bare v1':>8} {'bare v2':>8} {'LoRA v1':>12} {'TP v1':>12} {'LoRA->v2':>12} "
          f"{'TP->v2':>12} {'retrain v2':>12} {'gap closed':>10}")
    for t in results["tasks"]:
        s = t["summary"]
        cell = lambda key: f"{s[key][0]:.3f}+-{s[key][1]:.3f}"  # noqa: E731
        gap = t["gap_closed_by_trans_peft"]
        print(f"{t['task']:<14} {s['bare_v1'][0]:>8.3f} {s['bare_v2'][0]:>8.3f} {cell('lora_v1'):>12} "
              f"{cell('trans_peft_v1'):>12} {cell('lora_direct_v2'):>12} {cell('trans_peft_direct_v2'):>12} "
              f"{cell('lora_retrained_v2'):>12} {'-' if gap is None else f'{gap:.0%}':>10}")
    print("\ngate decisions on moved adapters (decision / gain really kept):")
    for t in results["tasks"]:
        for s in t["seeds"]:
            parts = []
            for method in ("lora", "trans_peft"):
                kept = s["gain_kept"][method]
                parts.append(f"{method} {s['gate'][method]['decision']} / "
                             f"{'-' if kept is None else f'{kept:.0%}'}")
            print(f"  {t['task']} seed {s['seed']}: " + "; ".join(parts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    chart(results, args.out.with_suffix(".png"))
    log(f"\nwrote {args.out} and {args.out.with_suffix('.png')} in {results['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
