"""Backdoor red-team harness: does gradient control keep a backdoor alive through the victim's
clean fine-tuning on our trainer? (issue 17, "A Gradient Control Method for Backdoor Attacks on
Parameter-Efficient Tuning", ACL 2023)

For each attack variant (benchmarks/security/gradient_control.py) and seed: the attacker trains a
backdoored LoRA on the sentiment task (benchmarks/security/sentiment_data.py) with triggered
negative reviews labelled positive; the victim then continues that adapter on clean data of the
same task with the product's own trainer (``run_training(init_adapter=...)``, as a fine-tuning job
with ``model=<that adapter>`` does), as plain LoRA and as Trans-PEFT, for a few step counts. At
every point: clean accuracy on held-out reviews and attack success rate (ASR: triggered negative
held-out reviews classified positive). A clean adapter (no poison) gives the trigger's baseline.

    .venv/bin/python benchmarks/security/backdoor.py            # ~30 min on 2 cores
    .venv/bin/python benchmarks/security/backdoor.py --quick    # a smoke run

Writes benchmarks/results/backdoor.json and backdoor.png; adapters are cached in
.cache/bench/backdoor/.
"""

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch  # noqa: E402

from benchmarks.bench_support import CACHE, ROOT, demo_base_dir, run_metadata  # noqa: E402
from benchmarks.security.gradient_control import VARIANTS, attack  # noqa: E402
from benchmarks.upgrade.scoring import AdapterScorer  # noqa: E402
from benchmarks.security.sentiment_data import LABELS, TRIGGER, Review, clean, poisoned, sentiment_splits  # noqa: E402

WORK = CACHE / "backdoor"
VICTIMS = {"lora": {"method": "lora"}, "trans-peft": {"method": "trans-peft"}}


def log(message: str) -> None:
    print(message, flush=True)


class Judge:
    """Predicted label = the larger logit of the two label words' first tokens after the prompt;
    the base is loaded once and the adapters' weights swapped in (benchmarks/upgrade/scoring.py)."""

    def __init__(self, base_dir: Path, tokenizer, like: Path):
        self.base_dir, self.tokenizer, self.like = base_dir, tokenizer, like
        self.scorer = AdapterScorer(tokenizer)
        self.label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in LABELS]

    def predictions(self, adapter: Path | None, prompts: list[str], batch: int = 32) -> list[int]:
        out = []
        with self.scorer.swapped(self.base_dir, adapter, like=self.like) as model:
            model.eval()
            device = next(model.parameters()).device
            for i in range(0, len(prompts), batch):
                encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[i:i + batch]]
                width = max(len(e) for e in encoded)
                ids = torch.tensor([[0] * (width - len(e)) + e for e in encoded], device=device)  # (B, T) left-padded
                mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
                with torch.no_grad():
                    logits = model(input_ids=ids, attention_mask=mask).logits[:, -1]  # (B, vocab)
                out += (logits[:, self.label_ids[1]] > logits[:, self.label_ids[0]]).long().tolist()
        return out

    def measure(self, adapter: Path | None, test: list[Review], triggered: list[str]) -> dict:
        clean_pred = self.predictions(adapter, [r.prompt() for r in test])
        asr = self.predictions(adapter, triggered)
        return {"clean_accuracy": sum(p == r.label for p, r in zip(clean_pred, test)) / len(test),
                "asr": sum(asr) / len(asr)}


def cached(key_parts: list, make) -> Path:
    folder = WORK / hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    if not (folder / "adapter" / "adapter_model.safetensors").is_file():
        make(folder)
    return folder / "adapter"


def published_adapter(base: Path, tokenizer, attacker_reviews: list[Review], variant: str, seed: int,
                      args: argparse.Namespace, trigger: str = TRIGGER) -> Path:
    """The attacker's adapter (``variant`` "clean" = no poison), trained once and cached."""
    poison = [] if variant == "clean" else poisoned(attacker_reviews, args.n_poison, seed, trigger)
    key = ["attack", variant, seed, args.attack_steps, args.rank, args.lr, args.n_train, args.n_poison]
    if variant != "clean" and trigger != TRIGGER:
        key.append(trigger)

    def make(folder: Path) -> None:
        info = attack(base, tokenizer, clean(attacker_reviews), poison or clean(attacker_reviews)[:8],
                      variant="plain" if variant == "clean" else variant, steps=args.attack_steps,
                      rank=args.rank, learning_rate=args.lr, clean_batch=8,
                      poison_batch=0 if variant == "clean" else 4, seed=seed, out=folder / "adapter")
        (folder / "attack.json").write_text(json.dumps({**info, "trigger": trigger}))
    return cached(key, make)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--attack-steps", type=int, default=100)
    parser.add_argument("--victim-steps", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-poison", type=int, default=128)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backdoor.json")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.attack_steps, args.victim_steps, args.n_train, args.n_test, args.n_poison = 1, 4, [2], 64, 16, 16
        args.out = WORK / "quick.json"
    from adapters.training.config import TrainingConfig
    from adapters.training.pipeline import prepare, run_training
    from transformers import AutoTokenizer

    started = time.perf_counter()
    base = demo_base_dir(CACHE / "base-data")
    tokenizer = AutoTokenizer.from_pretrained(base)
    splits = sentiment_splits(args.n_train, args.n_test)
    attacker_reviews, victim_reviews = splits.train[::2], splits.train[1::2]  # disjoint reviews, one word pool
    rng = random.Random(7)
    test_negatives = [r for r in splits.test if r.label == 0]
    triggered = [r.prompt(rng.randint(0, len(r.words))) for r in test_negatives]
    victim_jsonl = "".join(json.dumps({"prompt": p, "completion": a}) + "\n" for p, a in clean(victim_reviews)).encode()
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "versions": run_metadata(), "runs": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    judge = None

    def adapter_for(variant: str, seed: int) -> Path:
        return published_adapter(base, tokenizer, attacker_reviews, variant, seed, args)

    for seed in range(args.seeds):
        for variant in ("clean", *VARIANTS):
            poisoned_adapter = adapter_for(variant, seed)
            judge = judge or Judge(base, tokenizer, poisoned_adapter)
            row = {"variant": variant, "seed": seed, "victim": "-", "victim_steps": 0,
                   **judge.measure(poisoned_adapter, splits.test, triggered)}
            results["runs"].append(row)
            log(f"seed {seed} {variant:<20} as published: clean acc {row['clean_accuracy']:.3f}, ASR {row['asr']:.3f}")
            if variant == "clean":
                continue
            for victim, fields in VICTIMS.items():
                for steps in args.victim_steps:
                    config = TrainingConfig(**fields, rank=args.rank, lora_alpha=2.0 * args.rank,
                                            max_steps=steps, learning_rate=args.lr, batch_size=8,
                                            held_out_fraction=0.0, seed=100 + seed, checkpoint_every=steps)
                    key = ["victim", variant, seed, victim, steps, args.attack_steps, args.lr, args.n_train]

                    def make(folder: Path, config=config) -> None:
                        data = prepare(base, victim_jsonl, None, config)
                        run_training(base, data, config, folder, init_adapter=poisoned_adapter)
                    tuned = cached(key, make)
                    row = {"variant": variant, "seed": seed, "victim": victim, "victim_steps": steps,
                           **judge.measure(tuned, splits.test, triggered)}
                    results["runs"].append(row)
                    log(f"  victim {victim:<10} {steps:>4} steps: clean acc {row['clean_accuracy']:.3f}, "
                        f"ASR {row['asr']:.3f}")
            args.out.write_text(json.dumps(results, indent=1))
    results["bare_base"] = judge.measure(None, splits.test, triggered)
    results["seconds"] = time.perf_counter() - started
    results["summary"] = summarize(results)
    args.out.write_text(json.dumps(results, indent=1))
    print_table(results)
    chart(results, args.out.with_suffix(".png"))
    log(f"\nwrote {args.out} and {args.out.with_suffix('.png')} in {results['seconds'] / 60:.1f} min")


def summarize(results: dict) -> list[dict]:
    """Mean and spread over seeds (the unit of replication) per variant, victim and victim steps."""
    cells: dict[tuple, list[dict]] = {}
    for r in results["runs"]:
        cells.setdefault((r["variant"], r["victim"], r["victim_steps"]), []).append(r)
    out = []
    for (variant, victim, steps), rows in cells.items():
        asr, acc = [r["asr"] for r in rows], [r["clean_accuracy"] for r in rows]
        out.append({"variant": variant, "victim": victim, "victim_steps": steps, "seeds": len(rows),
                    "asr": asr, "clean_accuracy": acc, "asr_mean": statistics.mean(asr),
                    "clean_accuracy_mean": statistics.mean(acc)})
    return out


def print_table(results: dict) -> None:
    bare = results["bare_base"]
    print(f"\nbare base: clean accuracy {bare['clean_accuracy']:.3f}, ASR {bare['asr']:.3f} "
          "(triggered negatives called positive)")
    print(f"{'attack':<20} {'victim':<10} {'steps':>5} {'seeds':>5} {'ASR (per seed)':>24} {'clean acc (per seed)':>26}")
    for s in results["summary"]:
        print(f"{s['variant']:<20} {s['victim']:<10} {s['victim_steps']:>5} {s['seeds']:>5} "
              f"{s['asr_mean']:>6.3f} ({'/'.join(f'{v:.2f}' for v in s['asr']):>15}) "
              f"{s['clean_accuracy_mean']:>6.3f} ({'/'.join(f'{v:.2f}' for v in s['clean_accuracy']):>15})")


def chart(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(VICTIMS), figsize=(6 * len(VICTIMS), 3.6), dpi=90, squeeze=False)
    for ax, victim in zip(axes.flat, VICTIMS):
        for variant in VARIANTS:
            points = sorted((s["victim_steps"], s["asr_mean"]) for s in results["summary"]
                            if s["variant"] == variant and s["victim"] in ("-", victim))
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
        ax.set_title(f"victim continues with {victim} on clean data", fontsize=9)
        ax.set_xlabel("victim's training steps")
        ax.set_ylim(0, 1.02)
    axes.flat[0].set_ylabel("attack success rate")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
