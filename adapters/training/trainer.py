"""LoRA / Trans-PEFT training on transformers + peft: seeded, checkpointed, resumable.

The result is a plain PEFT LoRA folder; Trans-PEFT only changes the training forward pass.
"""

import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.training.config import TrainingConfig
from adapters.training.dataset import IGNORE_INDEX, TokenizedExample
from adapters.training.ffn_weakening import FFNWeakening

CHECKPOINT = "checkpoint"


class TrainingCancelled(Exception):
    pass


@dataclass
class Progress:
    step: int
    total_steps: int
    loss: float
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / max(self.step, 1) * (self.total_steps - self.step)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def total_steps(config: TrainingConfig, n_examples: int) -> int:
    return config.max_steps or math.ceil(n_examples / config.batch_size) * config.n_epochs


def _batches(examples: list[TokenizedExample], config: TrainingConfig, pad_id: int, device):
    """Endless seeded batches; the order depends only on (seed, epoch), so a resumed run sees
    exactly the batches the original would have."""
    epoch = 0
    while True:
        order = list(range(len(examples)))
        random.Random(config.seed * 1000 + epoch).shuffle(order)
        for start in range(0, len(order), config.batch_size):
            chunk = [examples[i] for i in order[start:start + config.batch_size]]
            width = max(len(e.input_ids) for e in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
            for row, e in enumerate(chunk):
                ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
                labels[row, : len(e.labels)] = torch.tensor(e.labels)
                mask[row, : len(e.input_ids)] = 1
            yield ids.to(device), labels.to(device), mask.to(device)
        epoch += 1


def build_model(base_dir: Path, config: TrainingConfig, device):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(device)
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    weakening = None
    if config.method == "trans-peft":
        weakening = FFNWeakening(p_m=config.p_m, p_c=config.p_c).attach(model)
    return model, weakening


def train(base_dir: Path, examples: list[TokenizedExample], config: TrainingConfig, work_dir: Path, *,
          pad_id: int, on_progress: Callable[[Progress], None] | None = None,
          cancel: threading.Event | None = None) -> Path:
    """Train and return the folder of the final adapter (``work_dir/adapter``). If
    ``work_dir/checkpoint`` exists the run resumes from it."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import get_cosine_schedule_with_warmup

    device = pick_device()
    torch.manual_seed(config.seed)
    model, _ = build_model(base_dir, config, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    steps = total_steps(config, len(examples))
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps), steps)

    step, ckpt = 0, work_dir / CHECKPOINT
    if (ckpt / "state.json").is_file():
        state = json.loads((ckpt / "state.json").read_text())
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors"), device=str(device)))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True))
        step = state["step"]

    batches = _batches(examples, config, pad_id, device)
    for _ in range(step):  # skip what the checkpointed run already consumed
        next(batches)
    model.train()
    started = time.perf_counter()
    while step < steps:
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled()
        ids, labels, mask = next(batches)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if on_progress is not None:
            on_progress(Progress(step, steps, float(loss.detach()), time.perf_counter() - started))
        if step % config.checkpoint_every == 0 and step < steps:
            _save_checkpoint(model, optimizer, scheduler, step, ckpt)

    out = work_dir / "adapter"
    model.save_pretrained(out, safe_serialization=True)
    return out


def _save_checkpoint(model, optimizer, scheduler, step: int, ckpt: Path) -> None:
    """Written to a temp folder and renamed, so a kill mid-save keeps the previous checkpoint."""
    import shutil

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(torch.get_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)
