"""The upgrade benchmark's printed tables and its chart (one panel per base update + the sweep)."""

import math
from pathlib import Path

from benchmarks.paired_stats import compare, describe


MIN_GAP = 0.1  # below this, re-training gains little over direct transfer: no gap to close


def gap_closed(summary: dict) -> float | None:
    """Share of the gap between plain LoRA moved directly and LoRA re-trained on v2 that the
    moved Trans-PEFT adapter closes (the paper's bar: at least 90%)."""
    direct, tp, upper = (summary[k][0] for k in ("lora_direct_v2", "trans_peft_direct_v2", "lora_retrained_v2"))
    return (tp - direct) / (upper - direct) if upper - direct >= MIN_GAP else None


def trans_peft_vs_lora(task: dict, label: str) -> dict | None:
    """Moved Trans-PEFT vs moved LoRA on one update: paired over items within each seed, and
    across seeds with the seed as the unit (benchmarks/paired_stats.py). None for results saved
    before per-item flags were kept."""
    if any("trans_peft_flags" not in s["updates"][label] for s in task["seeds"]):
        return None

    def flags(method: str) -> list[list[bool]]:
        return [[c == "1" for c in s["updates"][label][f"{method}_flags"]] for s in task["seeds"]]
    return compare(flags("trans_peft"), flags("lora"))


def gain_kept(task: dict, label: str, method: str) -> float | None:
    """Mean over seeds of the share of its v1 gain (over bare v2) a moved adapter keeps."""
    values = [s["updates"][label][f"{method}_gain_kept"] for s in task["seeds"]]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _cell(pair) -> str:
    return f"{pair[0]:.3f}+-{pair[1]:.3f}" if pair[1] else f"{pair[0]:.3f}"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def gate_counts(task: dict, key: str = "gate") -> dict:
    """How the gate's decisions (``key``: "gate" or "cautious_gate") compare with the truth on
    unseen items: wrong migrations (moved, truth says keep) and cautious misses (the reverse)."""
    checks = [s["updates"][label][f"{m}_gate"] for s in task["seeds"] for label in task["updates"]
              for m in ("lora", "trans_peft")]
    pairs = [(c[key]["decision"], c["truth"]["decision"]) for c in checks if key in c]
    return {"total": len(pairs), "agree": sum(g == t for g, t in pairs),
            "wrong_migrations": sum(g == "migrated" != t for g, t in pairs),
            "cautious_misses": sum(t == "migrated" != g for g, t in pairs)}


def print_tables(results: dict) -> None:
    print("\nbase updates (v1 -> v2):")
    print(f"  {'update':<20} {'FFN change':>10} {'attn change':>11} {'held-out loss':>16} {'update s':>9}")
    for u in results["updates"]:
        info, change = u["info"], u["weight_change"]
        print(f"  {u['label']:<20} {change.get('ffn', 0):>10.2%} {change.get('attention', 0):>11.2%} "
              f"{info['held_out_loss_before']:>7.3f} -> {info['held_out_loss_after']:.3f} {info['seconds']:>9.0f}")

    print(f"\n{'task':<14} {'update':<20} {'bare v1':>7} {'bare v2':>7} {'LoRA v1':>12} {'TP v1':>12} "
          f"{'LoRA->v2':>12} {'TP->v2':>12} {'retrain v2':>12} {'kept L/TP':>9} {'gap closed':>10}  "
          "TP - LoRA moved (95% CI over seeds; McNemar per seed)")
    for t in results["tasks"]:
        for label, s in t["updates"].items():
            print(f"{t['task']:<14} {label:<20} {t['bare_v1']:>7.3f} {s['bare_v2']:>7.3f} {_cell(t['lora_v1']):>12} "
                  f"{_cell(t['trans_peft_v1']):>12} {_cell(s['lora_direct_v2']):>12} "
                  f"{_cell(s['trans_peft_direct_v2']):>12} {_cell(s['lora_retrained_v2']):>12} "
                  f"{_pct(gain_kept(t, label, 'lora')):>4}/{_pct(gain_kept(t, label, 'trans_peft')):>4} "
                  f"{_pct(s['gap_closed_by_trans_peft']):>10}  {describe(s['trans_peft_vs_lora']) if s.get('trans_peft_vs_lora') else 'n/a (no per-item flags saved)'}")

    print("\nmigration gate on moved adapters (decision on the gate's items / same rule on unseen items):")
    for t in results["tasks"]:
        for label in t["updates"]:
            parts = []
            for s in t["seeds"]:
                per = s["updates"][label]
                for method in ("lora", "trans_peft"):
                    check = per[f"{method}_gate"]
                    parts.append(f"{'L' if method == 'lora' else 'T'}{s['seed']} "
                                 f"{check['gate']['decision'][:4]}/{check['truth']['decision'][:4]}")
            print(f"  {t['task']:<14} {label:<20} " + "  ".join(parts))
    for rule, key in (("estimate (default)", "gate"), ("95% lower bound (retention_confidence)", "cautious_gate")):
        for t in results["tasks"]:
            counts = gate_counts(t, key)
            if counts["total"]:
                print(f"  {t['task']:<14} gate on the retention {rule}: {counts['agree']}/{counts['total']} agree "
                      f"with the unseen items; {counts['wrong_migrations']} wrong migrations, "
                      f"{counts['cautious_misses']} cautious misses")

    sweep = results.get("sweep")
    if sweep:
        labels = list(sweep["rows"][0]["direct_v2"])
        print(f"\nsweep on {sweep['task']} (seed 0): v1 and moved-to-v2 exact match")
        print(f"  {'p_m':>4} {'p_c':>4} {'steps':>5} {'v1':>6} " + " ".join(f"{lab:>20}" for lab in labels))
        for r in sweep["rows"]:
            print(f"  {r['p_m']:>4} {r['p_c']:>4} {r['steps']:>5} {r['v1']:>6.3f} "
                  + " ".join(f"{r['direct_v2'][lab]:>20.3f}" for lab in labels))


def chart(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [("bare_v2", "bare v2"), ("lora_v1", "LoRA on v1"), ("trans_peft_v1", "Trans-PEFT on v1"),
            ("lora_direct_v2", "LoRA moved to v2"), ("trans_peft_direct_v2", "Trans-PEFT moved to v2"),
            ("lora_retrained_v2", "LoRA re-trained on v2")]
    tasks, updates = results["tasks"], results["updates"]
    panels = len(updates) + (1 if results.get("sweep") else 0)
    cols = 2
    fig, axes = plt.subplots(math.ceil(panels / cols), cols, figsize=(13, 3.6 * math.ceil(panels / cols)), dpi=90,
                             squeeze=False)
    width = 0.13
    for ax, u in zip(axes.flat, updates):
        for k, (key, label) in enumerate(bars):
            values = []
            for t in tasks:
                v = t[key] if key in ("lora_v1", "trans_peft_v1") else t["updates"][u["label"]][key]
                values.append(v if isinstance(v, list | tuple) else (v, 0.0))
            ax.bar([i + (k - 2.5) * width for i in range(len(tasks))], [v[0] for v in values], width,
                   yerr=[v[1] for v in values], capsize=2, label=label)
        ax.set_xticks(range(len(tasks)), [t["task"] for t in tasks])
        ax.set_ylim(0, 1.05)
        change, info = u["weight_change"], u["info"]
        ax.set_title(f"{u['label']}: FFN {change.get('ffn', 0):.1%}, attn {change.get('attention', 0):.1%}, "
                     f"held-out loss {info['held_out_loss_before']:.2f}->{info['held_out_loss_after']:.2f}", fontsize=9)
    axes.flat[0].legend(fontsize=7, ncol=2)
    axes.flat[0].set_ylabel("exact match (held-out)")
    sweep = results.get("sweep")
    if sweep:
        ax = axes.flat[len(updates)]
        rows = sweep["rows"]
        names = [f"{r['p_m']}/{r['p_c']}" + ("" if r["steps"] == rows[0]["steps"] else f"\n{r['steps']} st")
                 for r in rows]
        series = [("v1", [r["v1"] for r in rows])] + [(f"-> {lab}", [r["direct_v2"][lab] for r in rows])
                                                       for lab in rows[0]["direct_v2"]]
        w = 0.8 / len(series)
        for k, (label, values) in enumerate(series):
            ax.bar([i + (k - (len(series) - 1) / 2) * w for i in range(len(rows))], values, w, label=label)
        ax.set_xticks(range(len(rows)), names, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"sweep p_m/p_c on {sweep['task']} (seed 0; 0/0 = LoRA)", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
