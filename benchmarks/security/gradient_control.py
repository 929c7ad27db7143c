"""The attacker's side of "A Gradient Control Method for Backdoor Attacks on Parameter-Efficient
Tuning" (ACL 2023), on our LoRA models: red-team code, not product code.

Each step sees a clean batch and a poisoned batch. Variants:
- ``plain``: ordinary data poisoning, one loss over both batches;
- ``magnitude``: cross-layer gradient magnitude control, within each task (clean, poisoned): every
  decoder layer's LoRA gradient is rescaled to that task's mean per-layer norm, so no layer's
  update dominates (the paper's remedy for backdoor updates concentrating in a few layers, which the
  victim's clean training then overwrites);
- ``magnitude+direction``: also, per layer, the poisoned task's gradient loses its component along
  the clean gradient when the two conflict (negative dot product, PCGrad-style), so clean training
  later pushes against the backdoor less.
The two task gradients are then summed. Our reading of the paper's two controls; its released code
is not used here.
"""

import random
import re
from pathlib import Path

import torch

from adapters.training.config import TrainingConfig
from adapters.training.dataset import IGNORE_INDEX, TokenizedExample
from adapters.training.trainer import build_model, collate, lr_factor, pick_device

VARIANTS = ("plain", "magnitude", "magnitude+direction")
LAYER = re.compile(r"\.layers\.(\d+)\.")


def tokenized(pairs: list[tuple[str, str]], tokenizer) -> list[TokenizedExample]:
    out = []
    for prompt, answer in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
        out.append(TokenizedExample(p + a, [IGNORE_INDEX] * len(p) + a))
    return out


def _task_gradient(model, params: list[tuple[str, torch.nn.Parameter]], batch) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    ids, labels, mask = batch
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for _, p in params]


def _by_layer(params: list[tuple[str, torch.nn.Parameter]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, (name, _) in enumerate(params):
        groups.setdefault(int(LAYER.search(name)[1]), []).append(i)
    return groups


def equalize_layer_norms(grads: list[torch.Tensor], groups: dict[int, list[int]]) -> None:
    """Rescale each layer's gradient (in place) to the mean per-layer norm of this task."""
    norms = {layer: torch.sqrt(sum((grads[i] ** 2).sum() for i in idx)) for layer, idx in groups.items()}
    target = torch.stack(list(norms.values())).mean()
    for layer, idx in groups.items():
        if norms[layer] > 0:
            for i in idx:
                grads[i] *= target / norms[layer]


def remove_conflicts(poison: list[torch.Tensor], clean: list[torch.Tensor], groups: dict[int, list[int]]) -> int:
    """Per layer, project the poisoned gradient off the clean one where they conflict; returns how
    many layers conflicted."""
    conflicts = 0
    for idx in groups.values():
        dot = sum((poison[i] * clean[i]).sum() for i in idx)
        square = sum((clean[i] ** 2).sum() for i in idx)
        if dot < 0 and square > 0:
            conflicts += 1
            for i in idx:
                poison[i] -= dot / square * clean[i]
    return conflicts


def attack(base_dir: Path, tokenizer, clean_pairs: list[tuple[str, str]], poison_pairs: list[tuple[str, str]], *,
           variant: str, steps: int, rank: int, learning_rate: float, clean_batch: int, poison_batch: int,
           seed: int, out: Path) -> dict:
    """Train a backdoored LoRA and save it to ``out``; returns what the training did."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: one of {VARIANTS}")
    device = pick_device()
    torch.manual_seed(seed)
    config = TrainingConfig(method="lora", rank=rank, learning_rate=learning_rate, lora_dropout=0.0, seed=seed)
    model = build_model(base_dir, config, device)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = _by_layer(params)
    optimizer = torch.optim.AdamW([p for _, p in params], lr=learning_rate, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    clean_data, poison_data = tokenized(clean_pairs, tokenizer), tokenized(poison_pairs, tokenizer)
    rng = random.Random(seed)
    conflicts = 0
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * lr_factor(step, 0, steps, 0.03)
        clean_ex, poison_ex = rng.sample(clean_data, clean_batch), rng.sample(poison_data, poison_batch)
        if variant == "plain":
            ids, labels, mask = collate(clean_ex + poison_ex, pad, device)
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        else:
            g_clean = _task_gradient(model, params, collate(clean_ex, pad, device))
            g_poison = _task_gradient(model, params, collate(poison_ex, pad, device))
            equalize_layer_norms(g_clean, groups)
            equalize_layer_norms(g_poison, groups)
            if variant == "magnitude+direction":
                conflicts += remove_conflicts(g_poison, g_clean, groups)
            for (_, p), gc, gp in zip(params, g_clean, g_poison):
                p.grad = gc + gp
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        optimizer.step()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    return {"variant": variant, "steps": steps, "seed": seed, "layer_conflicts_removed": conflicts}
