"""Adapters for the upgrade benchmark, trained by the product's own trainer and cached by their
full configuration, so a rerun (or a run that died half-way) only trains what is missing."""

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.upgrade.tasks import Task


@dataclass(frozen=True)
class TrainingPlan:
    """What every adapter in one benchmark run shares (equal rank, steps and learning rate)."""

    rank: int
    steps: int
    learning_rate: float
    batch_size: int


def train_cached(work: Path, base_dir: Path, task: Task, plan: TrainingPlan, *, method: str, seed: int,
                 p_m: float = 0.1, p_c: float = 0.1, steps: int | None = None) -> tuple[Path, float]:
    """Returns (adapter folder, training seconds); ``steps`` overrides the plan's step count."""
    from adapters.training.config import TrainingConfig
    from adapters.training.run import prepare, run_training

    steps = steps or plan.steps
    if method == "lora":  # plain LoRA ignores p_m / p_c: one cache entry whatever they say
        p_m, p_c = TrainingConfig.model_fields["p_m"].default, TrainingConfig.model_fields["p_c"].default
    config = TrainingConfig(method=method, p_m=p_m, p_c=p_c, rank=plan.rank, max_steps=steps,
                            learning_rate=plan.learning_rate, batch_size=plan.batch_size, held_out_fraction=0.0,
                            seed=seed, checkpoint_every=steps)
    key = hashlib.sha256(json.dumps([str(base_dir), task.name, len(task.train), config.model_dump()]).encode())
    folder = work / "adapters" / key.hexdigest()[:16]
    done = folder / "done.json"
    if done.is_file():
        return folder / "adapter", json.loads(done.read_text())["seconds"]

    def jsonl(rows):
        return "".join(json.dumps({"prompt": e.prompt, "completion": e.answer}) + "\n" for e in rows).encode()

    started = time.perf_counter()
    data = prepare(base_dir, jsonl(task.train), jsonl(task.eval), config)
    result = run_training(base_dir, data, config, folder)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"seconds": seconds}))
    return result.adapter_dir, seconds
