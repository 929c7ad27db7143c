"""Training on transformers + peft: seeded, checkpointed, resumable, for every method.

The rank method (plain LoRA, BeamLoRA, Light-PEFT) and Trans-PEFT's FFN weakening plug into one
loop; each result is a plain PEFT LoRA folder.
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

from adapters.errors import InvalidRequestError
from adapters.training.config import TrainingConfig
from adapters.training.dataset import IGNORE_INDEX, TokenizedExample
from adapters.training.ffn_weakening import FFNWeakening
from adapters.training.rank_method import RankMethod, make_rank_method

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


@dataclass(frozen=True)
class TrainingOutcome:
    adapter_dir: Path
    record: dict  # what the method did (BeamLoRA rounds, Light-PEFT pruning), trainable parameters


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def total_steps(config: TrainingConfig, n_examples: int) -> int:
    return config.max_steps or math.ceil(n_examples / config.batch_size) * config.n_epochs


def lr_factor(step: int, start: int, end: int, warmup_ratio: float) -> float:
    """Linear warm-up then cosine decay over steps [start, end) (transformers' cosine schedule)."""
    warmup = int(warmup_ratio * (end - start))
    s = step - start
    if s < warmup:
        return s / max(1, warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (s - warmup) / max(1, end - start - warmup))))


def _batches(examples: list[TokenizedExample], config: TrainingConfig, pad_id: int, device):
    """Endless seeded batches; the order depends only on (seed, epoch), so a resumed run sees
    exactly the batches the original would have."""
    epoch = 0
    while True:
        order = list(range(len(examples)))
        random.Random(config.seed * 1000 + epoch).shuffle(order)
        for start in range(0, len(order), config.batch_size):
            yield collate([examples[i] for i in order[start:start + config.batch_size]], pad_id, device)
        epoch += 1


def collate(examples: list[TokenizedExample], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """(input ids, labels, attention mask), each (B, T), right-padded to the longest example."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def build_model(base_dir: Path, config: TrainingConfig, device):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(device)
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


class _Run:
    """The mutable parts of one run: model, method, weakening, optimizer (rebuilt when the method
    restructures the model) and the span of steps the learning-rate schedule covers."""

    def __init__(self, model, method: RankMethod, config: TrainingConfig, steps: int):
        self.model, self.method, self.config, self.steps = model, method, config, steps
        self.weakening = FFNWeakening(p_m=config.p_m, p_c=config.p_c).attach(model) if config.weakens_ffn else None
        self.schedule_start = 0
        self.optimizer = self._optimizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        self.params = [p for p in self.model.parameters() if p.requires_grad] + self.method.parameters()
        return torch.optim.AdamW(self.params, lr=self.config.learning_rate, weight_decay=0.0)

    def restructured(self, model, step: int) -> None:
        """The method swapped the model (Light-PEFT's stage 2): fresh optimizer, schedule from ``step``."""
        if self.weakening is not None:
            self.weakening.detach()
            self.weakening.attach(model)
        self.model, self.schedule_start = model, step
        self.optimizer = self._optimizer()

    def set_step(self, step: int) -> None:
        factor = lr_factor(step, self.schedule_start, self.steps, self.config.warmup_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate * factor
        if self.weakening is not None:
            anneal = self.config.weakening_schedule == "anneal"
            self.weakening.scale = 0.5 * (1 + math.cos(math.pi * step / self.steps)) if anneal else 1.0


def load_initial_adapter(model, folder: Path) -> None:
    """Start from an existing adapter's weights (continued training): same rank and targets, or a
    clear error. ``folder`` holds its ``adapter_model.safetensors``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"), device=str(next(model.parameters()).device))
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as e:  # a shape mismatch: another rank or another base
        raise InvalidRequestError(f"the adapter to continue does not fit this training run: {e}",
                                  code="init_adapter_mismatch", param="model") from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise InvalidRequestError(f"the adapter to continue targets other modules than this run "
                                  f"(first: {(result.unexpected_keys + missing)[0]})",
                                  code="init_adapter_mismatch", param="model")


def train(base_dir: Path, examples: list[TokenizedExample], config: TrainingConfig, work_dir: Path, *,
          pad_id: int, on_progress: Callable[[Progress], None] | None = None,
          cancel: threading.Event | None = None, init_adapter: Path | None = None,
          on_checkpoint: Callable[[int, Path], None] | None = None) -> TrainingOutcome:
    """Train and write the final adapter to ``work_dir/adapter``, starting from ``init_adapter``'s
    weights when given. If ``work_dir/checkpoint`` exists the run resumes from it.
    ``on_checkpoint(step, folder)`` after each checkpoint is written (to copy it elsewhere)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = pick_device()
    torch.manual_seed(config.seed)
    steps = total_steps(config, len(examples))
    model = build_model(base_dir, config, device)
    if init_adapter is not None:
        load_initial_adapter(model, init_adapter)
    method = make_rank_method(model, config, steps)
    step, ckpt = 0, work_dir / CHECKPOINT
    state = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").is_file() else None
    if state is not None:
        step = state["step"]
        model = method.resume(model, torch.load(ckpt / "method.pt", weights_only=True))
    run = _Run(model, method, config, steps)
    if state is not None:
        run.schedule_start = state["schedule_start"]
        set_peft_model_state_dict(run.model, load_file(str(ckpt / "adapter_model.safetensors"), device=str(device)))
        run.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True))
        torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True))

    batches = _batches(examples, config, pad_id, device)
    for _ in range(step):  # skip what the checkpointed run already consumed
        next(batches)
    run.model.train()
    method.start(step)
    started = time.perf_counter()
    while step < steps:
        if cancel is not None and cancel.is_set():
            if step and method.can_checkpoint(step):  # a pause resumes from here (a cancel discards it)
                _save_checkpoint(run, step, ckpt, on_checkpoint)
            raise TrainingCancelled()
        if method.restructure_due(step):
            run.restructured(method.restructure(run.model), step)
            run.model.train()
        ids, labels, mask = next(batches)
        run.set_step(step)
        method.before_forward(mask)
        loss = run.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        penalty = method.penalty()
        (loss if penalty is None else loss + penalty).backward()
        method.after_backward(step)
        torch.nn.utils.clip_grad_norm_(run.params, 1.0)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        step += 1
        method.after_step(step, run.optimizer)
        if on_progress is not None:
            on_progress(Progress(step, steps, float(loss.detach()), time.perf_counter() - started))
        if step % config.checkpoint_every == 0 and step < steps and method.can_checkpoint(step):
            _save_checkpoint(run, step, ckpt, on_checkpoint)

    run.model.eval()
    out = method.export(run.model, work_dir / "adapter")
    trainable = sum(p.numel() for p in run.params)
    return TrainingOutcome(out, {**method.record(), "trainable_parameters": trainable,
                                 "seconds": time.perf_counter() - started})


def _save_checkpoint(run: _Run, step: int, ckpt: Path, then: Callable[[int, Path], None] | None) -> None:
    """Written to a temp folder and renamed, so a kill mid-save keeps the previous checkpoint."""
    import shutil

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run.model.save_pretrained(tmp, safe_serialization=True)
    torch.save(run.optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(run.method.state_dict(), tmp / "method.pt")
    torch.save(torch.get_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "schedule_start": run.schedule_start}))
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)
    if then is not None:
        then(step, ckpt)
