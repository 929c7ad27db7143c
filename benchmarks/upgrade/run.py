"""Upgrade benchmark: do adapters keep their gains across a base update, with and without Trans-PEFT?

v1 is SmolLM2-135M-Instruct; each v2 is v1 continually trained on Python's standard-library
source (benchmarks/upgrade/base_update.py), at several strengths. For each task
(benchmarks/upgrade/tasks.py) and seed, with equal rank, steps and learning rate: plain LoRA and
Trans-PEFT trained on v1 and scored on v1; both moved directly to every v2 (the same weights, no
training); LoRA re-trained on every v2 (the upper bound); bare v1 and every bare v2. Next to each
moved adapter: the migration gate's decision on a tenant-sized eval set and the same rule on the
examples the gate did not see. Then a sweep over Trans-PEFT's p_m and p_c (and a longer run) on
one task, scored on v1 and on every v2.

    .venv/bin/python benchmarks/upgrade/run.py            # all three tasks: ~2.5 h on a 2-core CPU alone
    .venv/bin/python benchmarks/upgrade/run.py --quick    # a smoke run (minutes)
    .venv/bin/python benchmarks/upgrade/run.py --steps 250 --tasks word_reversal --sweep \
        --out benchmarks/results/upgrade-250.json         # at convergence: ~1 h per task

Writes benchmarks/results/upgrade.json (after every task and sweep row; ``--resume`` carries on
from there) and upgrade.png; trained adapters and every v2 are cached in .cache/bench/upgrade/, so a rerun
only evaluates.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch  # noqa: E402

from benchmarks.bench_support import CACHE, ROOT, demo_base_dir  # noqa: E402
from benchmarks.upgrade.base_update import UpdateConfig, updated_base  # noqa: E402
from benchmarks.upgrade.gate_check import gate_check  # noqa: E402
from benchmarks.upgrade.report import chart, gap_closed, print_tables, trans_peft_vs_lora  # noqa: E402
from benchmarks.upgrade.scoring import accuracy, score  # noqa: E402
from benchmarks.upgrade.tasks import ALL_TASKS, Task  # noqa: E402
from benchmarks.upgrade.training_cache import TrainingPlan, train_cached  # noqa: E402
from migration.compatibility.weight_change import compare_weights, compatibility_report  # noqa: E402

WORK = CACHE / "upgrade"
# FFN-only at rising strength (~1/2/4.5% weight change), a longer gentle FFN-only update (a better
# model; it moved the FFN 1.84%), and a pilot-like update of every weight.
DEFAULT_UPDATES = ["ffn:5e-4:45", "ffn:1e-3:45", "ffn:2e-3:45", "ffn:5e-4:150", "all:1e-3:45"]


def log(message: str) -> None:
    print(message, flush=True)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def kept_gain(reference: float, floor: float, candidate: float) -> float | None:
    return (candidate - floor) / (reference - floor) if reference - floor > 0.05 else None


def flag_string(flags: list[bool]) -> str:
    """Right/wrong per eval item as '1'/'0', kept in the JSON so gate rules can be re-judged."""
    return "".join("1" if f else "0" for f in flags)


def build_updates(v1: Path, specs: list[str]) -> list[dict]:
    updates = []
    for spec in specs:
        config = UpdateConfig.parse(spec)
        log(f"v2 [{config.label}] (cached once trained)")
        v2, info = updated_base(v1, WORK, config, log=log)
        change = compatibility_report("v1", "v2", compare_weights(v1, v2))["groups"]
        log(f"  weight change: " + ", ".join(f"{g} {c['relative_change']:.2%}" for g, c in change.items())
            + f"; held-out loss {info['held_out_loss_before']:.3f} -> {info['held_out_loss_after']:.3f}")
        updates.append({"label": config.label, "dir": v2, "info": info,
                        "weight_change": {g: c["relative_change"] for g, c in change.items()}})
    return updates


def run_task(task: Task, v1: Path, updates: list[dict], tokenizer, plan: TrainingPlan, args) -> dict:
    log(f"task {task.name}: {len(task.train)} train / {len(task.eval)} eval examples")
    bare_v1 = score(v1, None, task.eval, tokenizer)
    bare_v2 = {u["label"]: score(u["dir"], None, task.eval, tokenizer) for u in updates}
    seeds = []
    for seed in range(args.seeds):
        lora_run = train_cached(WORK, v1, task, plan, method="lora", seed=seed)
        tp_run = train_cached(WORK, v1, task, plan, method="trans-peft", seed=seed)
        lora, lora_s, tp, tp_s = lora_run.adapter, lora_run.seconds, tp_run.adapter, tp_run.seconds
        flags = {"lora": score(v1, lora, task.eval, tokenizer), "trans_peft": score(v1, tp, task.eval, tokenizer)}
        row = {"seed": seed, "lora_v1": accuracy(flags["lora"]), "trans_peft_v1": accuracy(flags["trans_peft"]),
               "train_s": {"lora": lora_s, "trans_peft": tp_s}, "updates": {},
               "flags_v1": {method: flag_string(f) for method, f in flags.items()}}
        for u in updates:
            started = time.perf_counter()
            moved = {"lora": score(u["dir"], lora, task.eval, tokenizer),
                     "trans_peft": score(u["dir"], tp, task.eval, tokenizer)}
            per = {"migrate_s": (time.perf_counter() - started) / 2}  # one adapter scored on the new base
            for method, adapter_flags in moved.items():
                per[f"{method}_direct_v2"] = accuracy(adapter_flags)
                per[f"{method}_gain_kept"] = kept_gain(accuracy(flags[method]), accuracy(bare_v2[u["label"]]),
                                                       accuracy(adapter_flags))
                per[f"{method}_gate"] = gate_check(flags[method], bare_v2[u["label"]], adapter_flags,
                                                   args.gate_items)
                per[f"{method}_flags"] = flag_string(adapter_flags)
            row["updates"][u["label"]] = per
        log(f"  seed {seed}: LoRA v1 {row['lora_v1']:.3f}, TP v1 {row['trans_peft_v1']:.3f}; moved "
            + "; ".join(f"[{k}] LoRA {v['lora_direct_v2']:.3f} TP {v['trans_peft_direct_v2']:.3f}"
                        for k, v in row["updates"].items()))
        seeds.append(row)

    per_update = {}
    for u in updates:
        label = u["label"]
        retrained = []
        for seed in range(args.retrain_seeds):
            trained = train_cached(WORK, u["dir"], task, plan, method="lora", seed=seed)
            adapter, seconds = trained.adapter, trained.seconds
            retrained.append({"seed": seed, "acc": accuracy(score(u["dir"], adapter, task.eval, tokenizer)),
                              "train_s": seconds})
        summary = {"bare_v2": accuracy(bare_v2[label]),
                   "lora_direct_v2": mean_sd([s["updates"][label]["lora_direct_v2"] for s in seeds]),
                   "trans_peft_direct_v2": mean_sd([s["updates"][label]["trans_peft_direct_v2"] for s in seeds]),
                   "lora_retrained_v2": mean_sd([r["acc"] for r in retrained])}
        summary["gap_closed_by_trans_peft"] = gap_closed(summary)
        summary["retrained"] = retrained
        per_update[label] = summary
        log(f"  [{label}] bare v2 {summary['bare_v2']:.3f}, LoRA moved {summary['lora_direct_v2'][0]:.3f}, "
            f"TP moved {summary['trans_peft_direct_v2'][0]:.3f}, re-trained {summary['lora_retrained_v2'][0]:.3f}")
    result = {"task": task.name, "n_train": len(task.train), "n_eval": len(task.eval),
            "bare_v2_flags": {label: flag_string(f) for label, f in bare_v2.items()},
            "bare_v1": accuracy(bare_v1), "lora_v1": mean_sd([s["lora_v1"] for s in seeds]),
            "trans_peft_v1": mean_sd([s["trans_peft_v1"] for s in seeds]), "seeds": seeds, "updates": per_update}
    for label, summary in per_update.items():
        summary["trans_peft_vs_lora"] = trans_peft_vs_lora(result, label)
    return result


def sweep(task: Task, v1: Path, updates: list[dict], tokenizer, plan: TrainingPlan, args, done: dict,
          save) -> dict:
    """p_m / p_c (and steps) of Trans-PEFT against plain LoRA, seed 0: what each mechanism costs on
    v1 and buys on every v2. Rows already in ``done`` (a resumed run) are kept; ``save`` after each."""
    rows = done.setdefault("rows", [])
    done.update(task=task.name, seed=0)
    points = [(0.0, 0.0, plan.steps), (0.1, 0.1, plan.steps), *args.sweep]  # the first two: the grid's seed 0
    for p_m, p_c, steps in points:
        if any((r["p_m"], r["p_c"], r["steps"]) == (p_m, p_c, int(steps)) for r in rows):
            continue
        method = "lora" if p_m == 0.0 and p_c == 0.0 else "trans-peft"
        trained = train_cached(WORK, v1, task, plan, method=method, seed=0, p_m=p_m, p_c=p_c, steps=int(steps))
        adapter, seconds = trained.adapter, trained.seconds
        row = {"p_m": p_m, "p_c": p_c, "steps": int(steps), "train_s": seconds,
               "v1": accuracy(score(v1, adapter, task.eval, tokenizer)),
               "direct_v2": {u["label"]: accuracy(score(u["dir"], adapter, task.eval, tokenizer)) for u in updates}}
        rows.append(row)
        save()
        log(f"  p_m={p_m} p_c={p_c} steps={int(steps)}: v1 {row['v1']:.3f}; moved "
            + ", ".join(f"[{k}] {v:.3f}" for k, v in row["direct_v2"].items()))
    return done


def sweep_point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    return float(parts[0]), float(parts[1]), int(parts[2]) if len(parts) > 2 else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["word_reversal", "stdlib_module", "html_entity"],
                        choices=list(ALL_TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--retrain-seeds", type=int, default=1, help="seeds of the re-trained bound per update")
    parser.add_argument("--steps", type=int, default=100, help="LoRA training steps (equal for every method)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-eval", type=int, default=160)
    parser.add_argument("--gate-items", type=int, default=40, help="eval examples the migration gate sees")
    parser.add_argument("--updates", nargs="+", default=DEFAULT_UPDATES, help="params:lr:steps per v2")
    parser.add_argument("--sweep-task", default="word_reversal", choices=list(ALL_TASKS))
    parser.add_argument("--sweep", type=sweep_point, nargs="*",
                        default=[(0.0, 0.0, 250), (0.1, 0.1, 250), (0.3, 0.3, 0), (0.3, 0.0, 0), (0.0, 0.3, 0)],
                        help="p_m,p_c[,steps] points (steps 0: the grid's)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="re-print the tables and chart of --out")
    parser.add_argument("--resume", action="store_true",
                        help="keep the tasks and sweep rows already in --out; run only what is missing")
    parser.add_argument("--redo", nargs="+", default=[], choices=list(ALL_TASKS),
                        help="with --resume: run these finished tasks again (trained adapters are cached, so "
                             "this re-scores them, e.g. after a change to the gate)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "upgrade.json")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.sweep_task, args.seeds, args.steps, args.n_train, args.n_eval = (
            ["word_reversal"], "word_reversal", 1, 4, 16, 16)
        args.gate_items, args.updates, args.sweep = 8, ["ffn:1e-3:2", "all:1e-3:2"], [(0.3, 0.3, 0)]
        args.out = WORK / "quick.json"
    args.sweep = [(p_m, p_c, steps or args.steps) for p_m, p_c, steps in args.sweep]
    if args.report_only:
        results = json.loads(args.out.read_text())
        for task in results["tasks"]:
            for label, summary in task["updates"].items():
                summary["gap_closed_by_trans_peft"] = gap_closed(summary)
                summary.pop("trans_peft_vs_lora_mcnemar_p", None)  # pooled seeds x items: overstated
                summary["trans_peft_vs_lora"] = trans_peft_vs_lora(task, label)
        args.out.write_text(json.dumps(results, indent=2))
        print_tables(results)
        chart(results, args.out.with_suffix(".png"))
        return
    from transformers import AutoTokenizer

    started = time.perf_counter()
    v1 = demo_base_dir(CACHE / "base-data")
    updates = build_updates(v1, args.updates)
    tokenizer = AutoTokenizer.from_pretrained(v1)
    plan = TrainingPlan(rank=args.rank, steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size)
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "torch_threads": torch.get_num_threads(),
               "updates": [{k: v for k, v in u.items() if k != "dir"} for u in updates], "tasks": []}
    earlier_s = 0.0
    if args.resume and args.out.is_file():  # keep the tasks and sweep rows a previous run finished
        previous = json.loads(args.out.read_text())
        if [u["info"]["config"] for u in previous["updates"]] != [u["info"]["config"] for u in results["updates"]]:
            parser.error(f"--resume: {args.out} was made with other base updates")
        results.update(tasks=[t for t in previous["tasks"] if t["task"] not in args.redo],
                       sweep=previous.get("sweep", {}))
        earlier_s = previous.get("seconds", 0.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        results["seconds"] = earlier_s + time.perf_counter() - started
        args.out.write_text(json.dumps(results, indent=2))

    finished = {t["task"] for t in results["tasks"]}
    for name in args.tasks:
        if name not in finished:
            results["tasks"].append(run_task(ALL_TASKS[name](args.n_train, args.n_eval), v1, updates, tokenizer,
                                             plan, args))
            results["tasks"].sort(key=lambda t: args.tasks.index(t["task"]) if t["task"] in args.tasks else 99)
            save()
    log(f"sweep over p_m, p_c on {args.sweep_task}, seed 0:")
    results["sweep"] = results.get("sweep") or {}  # filled in place, so every save() has the rows so far
    sweep(ALL_TASKS[args.sweep_task](args.n_train, args.n_eval), v1, updates, tokenizer, plan, args,
          results["sweep"], save)
    save()
    print_tables(results)
    chart(results, args.out.with_suffix(".png"))
    log(f"\nwrote {args.out} and {args.out.with_suffix('.png')} in {results['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
