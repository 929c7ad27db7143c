"""Light-PEFT ("Light-PEFT: Lightening Parameter-Efficient Fine-Tuning via Early Pruning", ACL
Findings 2024; official code gccnlp/Light-PEFT @ 7b10c22, RoBERTa only), ported to Llama-style
decoders.

Stage 1, estimation (the first ``light_estimation_ratio`` of the steps): LoRA trains as usual
(with, when the base is to be pruned too, a scalar mask on every attention head and FFN neuron,
init 1, L1 penalty). Over the second half of it we average
- module importance: over non-pad tokens, ``||dW x|| / ||W x||`` (dW = the LoRA's update);
- rank importance (first-order Taylor): ``|mean(A_i * dA_i)| + |mean(B_i * dB_i)|``.
Then the least important modules are pruned globally (``light_module_prune``), then ranks of the
kept modules below the global ``light_rank_prune`` quantile; a module left with no rank goes.
With ``light_prune_base`` the lowest third of FFN neurons (by |mask|, globally) are cut out of
gate/up/down, and the lowest third of each layer's query heads are zeroed (masked, not removed:
with GQA the rest of a group still reads its KV head, so this saves no time; only the FFN cut does).

Stage 2: the pruned adapter (PEFT ``rank_pattern``, scaling kept at alpha / r) trains on with a
fresh optimizer. The result is written as a plain LoRA of rank r on the unpruned base: every
module of the target types, the pruned ranks, modules and neurons as zeros, so the upload
validation and vLLM see the format they already serve.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from adapters.training.config import TrainingConfig
from adapters.training.ffn_weakening import find_decoder_layers
from adapters.training.lora_modules import lora_layers, lora_weights, write_plain_lora
from adapters.training.rank_method import RankMethod

BASE_PRUNE_SHARE = 1 / 3  # heads per layer and FFN neurons globally, as released


@dataclass
class PrunePlan:
    """What stage 2 keeps: ranks per kept module, FFN neurons per layer, zeroed heads per layer."""

    ranks: dict[str, list[int]] = field(default_factory=dict)  # module -> kept rank indices
    neurons: dict[int, list[int]] = field(default_factory=dict)  # layer -> kept FFN neurons (all if absent)
    heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> zeroed query heads


class LightPEFT(RankMethod):
    def __init__(self, model: nn.Module, config: TrainingConfig, steps: int):
        super().__init__(model, config, steps)
        self.steps = steps
        self.estimation_steps = min(steps - 1, max(1, round(config.light_estimation_ratio * steps))) if steps > 1 else 1
        self.layers = lora_layers(model)
        self.names = list(self.layers)
        # Shapes of every LoRA module on the unpruned base, for writing the padded result.
        self.shapes = {n: (l.base_layer.out_features, l.base_layer.in_features) for n, l in self.layers.items()}
        self.plan: PrunePlan | None = None
        self.record_: dict = {"estimation_steps": self.estimation_steps}
        self._token_mask: torch.Tensor | None = None
        self._hooks: list = []
        self._module_sum = {n: 0.0 for n in self.names}
        self._module_count = {n: 0 for n in self.names}
        self._rank_sum = {n: torch.zeros(config.rank) for n in self.names}
        self._rank_count = 0
        self._collecting = False
        self._base_norms: dict[str, torch.Tensor] = {}
        self.decoder_layers = find_decoder_layers(model)
        cfg = model.config
        self.n_heads, self.head_dim = cfg.num_attention_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        device = next(model.parameters()).device
        self.head_masks = nn.ParameterList()
        self.neuron_masks = nn.ParameterList()
        if config.light_prune_base:
            for layer in self.decoder_layers:
                self.head_masks.append(nn.Parameter(torch.ones(self.n_heads, device=device)))
                self.neuron_masks.append(nn.Parameter(torch.ones(layer.mlp.down_proj.in_features, device=device)))
        self._attach_estimation_hooks()

    # -- stage 1: hooks ----------------------------------------------------------------------
    def _attach_estimation_hooks(self) -> None:
        for name, layer in self.layers.items():
            self._hooks.append(layer.base_layer.register_forward_hook(self._remember_base(name)))
            self._hooks.append(layer.lora_B["default"].register_forward_hook(self._module_ratio(name, layer)))
        for i, layer in enumerate(self.decoder_layers if self.config.light_prune_base else []):
            self._hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(self._scale_heads(i)))
            self._hooks.append(layer.mlp.down_proj.register_forward_pre_hook(self._scale_neurons(i)))

    def _remember_base(self, name: str):
        def hook(module, args, output):  # output: (B, T, out) = W x
            if self._collecting:
                self._base_norms[name] = output.detach().float().norm(dim=-1)  # (B, T)
        return hook

    def _module_ratio(self, name: str, layer):
        def hook(module, args, output):  # output: (B, T, out) = B A drop(x), before scaling
            if not self._collecting or name not in self._base_norms:
                return
            delta = output.detach().float().norm(dim=-1) * layer.scaling["default"]  # (B, T)
            ratio = delta / (self._base_norms.pop(name) + 1e-6)  # (B, T)
            keep = self._token_mask.to(ratio.device).bool()  # (B, T) non-pad tokens
            self._module_sum[name] += float(ratio[keep].sum())
            self._module_count[name] += int(keep.sum())
        return hook

    def _scale_heads(self, index: int):
        def hook(module, args):
            (x, *rest) = args  # x: (B, T, H*D), the heads' outputs before o_proj
            shape = x.shape
            x = (x.view(*shape[:-1], self.n_heads, self.head_dim) * self.head_masks[index][:, None].to(x.dtype))
            return (x.view(shape), *rest)
        return hook

    def _scale_neurons(self, index: int):
        def hook(module, args):
            (h, *rest) = args  # h: (B, T, I) intermediate activation
            return (h * self.neuron_masks[index].to(h.dtype), *rest)
        return hook

    # -- the trainer's interface -------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        return [*self.head_masks, *self.neuron_masks] if self.plan is None else []

    def before_forward(self, attention_mask: torch.Tensor) -> None:
        self._token_mask = attention_mask  # (B, T): which tokens the module importance averages over

    def penalty(self) -> torch.Tensor | None:
        if self.plan is not None or not self.config.light_prune_base:
            return None
        return self.config.light_mask_l1 * sum(m.abs().sum() for m in [*self.head_masks, *self.neuron_masks])

    def after_backward(self, step: int) -> None:
        """``step``: optimizer steps done before this one (0-based index of the step being taken)."""
        if self.plan is None and self._collecting:
            with torch.no_grad():
                for name in self.names:
                    a, b = lora_weights(self.layers[name])
                    if a.grad is None or b.grad is None:
                        continue
                    taylor = (a * a.grad).mean(dim=1).abs() + (b * b.grad).mean(dim=0).abs()  # (r,)
                    self._rank_sum[name] += taylor.float().cpu()
            self._rank_count += 1

    def after_step(self, step: int, optimizer) -> None:
        # Collect over the second half of the estimation steps (the step about to run is ``step``).
        self._collecting = self.plan is None and self.estimation_steps // 2 <= step < self.estimation_steps
        self._base_norms.clear()

    def start(self, step: int) -> None:
        self.after_step(step, None)

    def can_checkpoint(self, step: int) -> bool:
        return self.plan is not None  # estimation is short: a run killed in it starts over

    def restructure_due(self, step: int) -> bool:
        return self.plan is None and step >= self.estimation_steps

    # -- pruning -----------------------------------------------------------------------------
    def make_plan(self) -> PrunePlan:
        c = self.config
        module_score = {n: self._module_sum[n] / max(1, self._module_count[n]) for n in self.names}
        n_keep = max(1, math.ceil((1 - c.light_module_prune) * len(self.names)))
        kept = sorted(self.names, key=lambda n: -module_score[n])[:n_keep]
        rank_score = {n: self._rank_sum[n] / max(1, self._rank_count) for n in kept}  # (r,) each
        threshold = torch.quantile(torch.cat(list(rank_score.values())), c.light_rank_prune) if c.light_rank_prune else None
        plan = PrunePlan()
        for n in kept:
            ranks = list(range(c.rank)) if threshold is None else (rank_score[n] > threshold).nonzero().flatten().tolist()
            if ranks:
                plan.ranks[n] = ranks
        if not plan.ranks:  # all ties at the quantile: keep the single best rank of the best module
            plan.ranks[kept[0]] = [int(rank_score[kept[0]].argmax())]
        if c.light_prune_base:
            neuron_scores = torch.cat([m.detach().abs().cpu() for m in self.neuron_masks])
            cut = torch.quantile(neuron_scores.float(), BASE_PRUNE_SHARE)
            for i, m in enumerate(self.neuron_masks):
                plan.neurons[i] = (m.detach().abs().cpu() > cut).nonzero().flatten().tolist()
            per_layer = int(self.n_heads * BASE_PRUNE_SHARE)
            for i, m in enumerate(self.head_masks):
                plan.heads[i] = sorted(m.detach().abs().cpu().argsort()[:per_layer].tolist())
        self.record_.update(kept_modules=len(plan.ranks), modules=len(self.names),
                            kept_ranks=sum(len(r) for r in plan.ranks.values()), ranks=len(self.names) * c.rank,
                            kept_neurons=sum(len(v) for v in plan.neurons.values()) or None,
                            zeroed_heads=sum(len(v) for v in plan.heads.values()) or None)
        return plan

    def restructure(self, model: nn.Module, plan: PrunePlan | None = None) -> nn.Module:
        """Stage 2's model: the base (FFN cut when planned) with a LoRA of only the kept modules and ranks."""
        from peft import LoraConfig, get_peft_model

        self.plan = plan or self.make_plan()
        self._collecting = False
        kept = {n: tuple(w.detach().clone() for w in lora_weights(self.layers[n])) for n in self.plan.ranks}
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        base = model.unload()  # the base modules back in place, LoRA dropped (nothing merged)
        layers = find_decoder_layers(base)
        for i, neurons in self.plan.neurons.items():
            _cut_ffn(layers[i].mlp, torch.tensor(neurons, device=layers[i].mlp.down_proj.weight.device))
        c = self.config
        lora = LoraConfig(r=c.rank, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout, bias="none",
                          task_type="CAUSAL_LM", target_modules=list(self.plan.ranks),
                          rank_pattern={n: len(r) for n, r in self.plan.ranks.items()},
                          alpha_pattern={n: c.lora_alpha * len(r) / c.rank for n, r in self.plan.ranks.items()})
        model = get_peft_model(base, lora)
        self.layers = lora_layers(model)
        with torch.no_grad():
            for n, ranks in self.plan.ranks.items():
                a, b = lora_weights(self.layers[n])
                old_a, old_b = kept[n]  # (r, in_full), (out_full, r)
                new_a = old_a[ranks]  # (k, in_full)
                if n.endswith("down_proj") and self._layer_of(n) in self.plan.neurons:
                    new_a = new_a[:, self.plan.neurons[self._layer_of(n)]]  # (k, kept neurons)
                new_b = old_b[:, ranks]  # (out_full, k)
                if self._layer_of(n) in self.plan.neurons and n.endswith(("gate_proj", "up_proj")):
                    new_b = new_b[self.plan.neurons[self._layer_of(n)]]  # (kept neurons, k)
                a.copy_(new_a)
                b.copy_(new_b)
        device = next(model.parameters()).device
        for i, heads in self.plan.heads.items():
            zero = torch.ones(self.n_heads, device=device)
            zero[heads] = 0
            self._hooks.append(find_decoder_layers(model)[i].self_attn.o_proj.register_forward_pre_hook(
                _fixed_head_mask(zero, self.n_heads, self.head_dim)))
        return model

    @staticmethod
    def _layer_of(name: str) -> int:
        return int(name.split(".layers.")[1].split(".")[0])

    # -- checkpoints and the result ----------------------------------------------------------
    def state_dict(self) -> dict:
        p = self.plan
        return {"plan": None if p is None else {"ranks": p.ranks, "neurons": p.neurons, "heads": p.heads},
                "record": self.record_}

    def resume(self, model: nn.Module, state: dict) -> nn.Module:
        self.record_ = state["record"]
        if state["plan"] is None:
            return model
        return self.restructure(model, PrunePlan(**state["plan"]))

    def export(self, model: nn.Module, out: Path) -> Path:
        """Every module of the target types at rank r on the unpruned base; what was pruned is zero."""
        c = self.config
        tensors = {}
        for n, (out_f, in_f) in self.shapes.items():
            a_full, b_full = torch.zeros(c.rank, in_f), torch.zeros(out_f, c.rank)  # (r, in), (out, r)
            if n in self.plan.ranks:
                a, b = (w.detach().float().cpu() for w in lora_weights(self.layers[n]))  # (k, in'), (out', k)
                k = len(self.plan.ranks[n])
                neurons = self.plan.neurons.get(self._layer_of(n))
                if neurons is not None and n.endswith("down_proj"):
                    a_full[:k, neurons] = a
                else:
                    a_full[:k] = a
                if neurons is not None and n.endswith(("gate_proj", "up_proj")):
                    b_full[neurons, :k] = b
                else:
                    b_full[:, :k] = b
            tensors[n] = (a_full, b_full)
        return write_plain_lora(out, tensors, rank=c.rank, lora_alpha=c.lora_alpha,
                                target_modules=list(c.target_modules))

    def trainable_parameters(self) -> int:
        """LoRA parameters stage 2 trains (the adapter's effective size)."""
        return sum(a.numel() + b.numel() for a, b in (lora_weights(l) for l in self.layers.values()))

    def record(self) -> dict:
        return {**self.record_, "trainable_parameters": self.trainable_parameters()}


def _cut_ffn(mlp: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the intermediate neurons ``keep`` of a gated FFN (gate/up rows, down columns)."""
    for proj in ("gate_proj", "up_proj"):
        old = getattr(mlp, proj)
        new = nn.Linear(old.in_features, len(keep), bias=old.bias is not None, device=old.weight.device,
                        dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(old.weight[keep])  # (kept, hidden)
        new.weight.requires_grad_(False)
        setattr(mlp, proj, new)
    old = mlp.down_proj
    new = nn.Linear(len(keep), old.out_features, bias=old.bias is not None, device=old.weight.device,
                    dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:, keep])  # (hidden, kept)
    new.weight.requires_grad_(False)
    mlp.down_proj = new


def _fixed_head_mask(keep: torch.Tensor, n_heads: int, head_dim: int):
    def hook(module, args):
        (x, *rest) = args  # x: (B, T, H*D)
        shape = x.shape
        return ((x.view(*shape[:-1], n_heads, head_dim) * keep[:, None].to(x.dtype)).view(shape), *rest)
    return hook
