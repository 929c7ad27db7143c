"""Adapters for the benchmarks, trained by the product's own trainer and cached by their full
configuration, so a rerun (or a run that died half-way) only trains what is missing."""

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


@dataclass(frozen=True)
class Trained:
    adapter: Path
    seconds: float  # wall time of the training loop and the data preparation
    record: dict  # the trainer's record (trainable parameters, method details) and the run's peak GPU memory


def train_cached(work: Path, base_dir: Path, task: Task, plan: TrainingPlan, *, method: str, seed: int,
                 steps: int | None = None, **config_fields) -> Trained:
    """``steps`` overrides the plan's step count; ``config_fields`` are other TrainingConfig fields."""
    import torch

    from adapters.training.config import TrainingConfig
    from adapters.training.pipeline import prepare, run_training

    steps = steps or plan.steps
    if method == "lora":  # plain LoRA ignores p_m / p_c: one cache entry whatever they say
        config_fields = {k: v for k, v in config_fields.items() if k not in ("p_m", "p_c")}
    config = TrainingConfig(method=method, rank=plan.rank, max_steps=steps, learning_rate=plan.learning_rate,
                            batch_size=plan.batch_size, held_out_fraction=0.0, seed=seed, checkpoint_every=steps,
                            **config_fields)
    key = hashlib.sha256(json.dumps([str(base_dir), task.name, len(task.train), config.model_dump()]).encode())
    folder = work / "adapters" / key.hexdigest()[:16]
    done = folder / "done.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return Trained(folder / "adapter", saved["seconds"], saved.get("record", {}))

    def jsonl(rows):
        return "".join(json.dumps({"prompt": e.prompt, "completion": e.answer}) + "\n" for e in rows).encode()

    cuda = torch.cuda.is_available()
    if cuda:  # what this run adds on top of whatever the caller keeps on the GPU (e.g. scoring models)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    started = time.perf_counter()
    data = prepare(base_dir, jsonl(task.train), jsonl(task.eval), config)
    result = run_training(base_dir, data, config, folder)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    record = {**result.metadata.get("training", {}),
              "peak_gpu_bytes": torch.cuda.max_memory_allocated() - resident if cuda else None}
    done.write_text(json.dumps({"seconds": seconds, "record": record}))
    return Trained(result.adapter_dir, seconds, record)
