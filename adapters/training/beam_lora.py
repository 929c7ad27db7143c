"""BeamLoRA ("BeamLoRA: Beam-Constraint Low-Rank Adaptation", ACL 2025; official code
gccnlp/BeamLoRA @ 2610c6a): a rank beam search inside a LoRA of fixed rank r.

Each LoRA module gets a gate g in R^r (zeros, so it starts as plain LoRA); its forward is
``Wx + (alpha/r) * B((A drop(x)) * s)`` with the rank scores ``s = r * softmax(g / tau)``.
Every T steps until T_end, all modules' scores are sorted together and the ranks past the point
where the cumulative sum exceeds ``p_t * M * r`` are pruned (``p_t = 1 - 0.05 (1 + cos(pi t / T_end)) / 2``);
each module then refills its k pruned slots from its own top-k ranks by score, paired at random:
slot j paired with source i gets A[j,:] and B[:,j] from a snapshot taken T/2 steps earlier, and
both gates become their average. The rank never changes.

Optimizer at each reset: the gates' Adam moments are zeroed (the released ``--reset_optimizer``).
The released code also meant to copy the source rank's moments into the refilled slot, but its
boolean-index assignment writes to a temporary, so it does nothing; we instead zero the moments of
the refilled A rows and B columns: they hold weights from T/2 steps ago, and their old moments
belonged to the pruned rank.

Saving folds the gate into A exactly (``A' = diag(s) A``): a plain PEFT LoRA of rank r.
"""

import math
from pathlib import Path

import torch
from torch import nn

from adapters.training.config import TrainingConfig
from adapters.training.lora_modules import lora_layers, lora_weights, write_plain_lora
from adapters.training.rank_method import RankMethod


class BeamLoRA(RankMethod):
    def __init__(self, model: nn.Module, config: TrainingConfig, steps: int):
        super().__init__(model, config, steps)
        self.layers = lora_layers(model)
        self.names = list(self.layers)
        self.rank = config.rank
        self.tau = config.beam_tau or (0.03 if config.learning_rate < 1e-4 else 0.05)
        self.interval = config.beam_interval or max(2, steps // 10)
        self.expand_until = int(config.beam_expand_until * steps)
        self.steps = steps
        device = next(model.parameters()).device
        self.gates = nn.ParameterList([nn.Parameter(torch.zeros(self.rank, device=device)) for _ in self.names])
        self.snapshot: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.rounds: list[dict] = []  # what each prune-and-expand did, for the training record
        self._hooks = [self.layers[name].lora_A["default"].register_forward_hook(self._gate_hook(i))
                       for i, name in enumerate(self.names)]

    # -- the gated forward ------------------------------------------------------------------
    def scores(self, index: int) -> torch.Tensor:
        return self.rank * torch.softmax(self.gates[index] / self.tau, dim=0)  # (r,), sums to r

    def _gate_hook(self, index: int):
        def hook(module, args, output):  # output: (B, T, r) = A drop(x)
            return output * self.scores(index).to(output.dtype)
        return hook

    # -- the trainer's interface -------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        return list(self.gates)

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """``step``: optimizer steps done. Snapshots at T/2 into each round, prunes and expands at T."""
        if step >= min(self.expand_until, self.steps - self.interval):
            return
        if step % self.interval == self.interval // 2:
            self.snapshot = [tuple(w.detach().clone() for w in lora_weights(self.layers[n])) for n in self.names]
        elif step % self.interval == 0 and self.snapshot is not None:
            self.prune_and_expand(step, optimizer)

    # -- prune and expand --------------------------------------------------------------------
    def keep_share(self, step: int) -> float:
        eta = 0.05 * (1 + math.cos(math.pi * step / self.expand_until)) / 2
        return 1.0 - eta

    @torch.no_grad()
    def prune_and_expand(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        scores = torch.stack([self.scores(i) for i in range(len(self.names))])  # (M, r)
        flat, order = scores.flatten().sort(descending=True)  # (M*r,)
        within = flat.cumsum(0) <= self.keep_share(step) * flat.numel()
        keep_count = int(within.sum()) + 1  # the rank that crosses the threshold stays
        pruned = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        pruned[order[keep_count:]] = True
        pruned = pruned.view_as(scores)  # (M, r)
        generator = torch.Generator().manual_seed(self.config.seed * 7919 + step)
        refilled = 0
        for m, name in enumerate(self.names):
            slots = pruned[m].nonzero().flatten().tolist()
            if not slots:
                continue
            kept = [i for i in scores[m].argsort(descending=True).tolist() if i not in slots]
            sources = [kept[k % len(kept)] for k in range(len(slots))] if kept else []
            if not sources:
                continue  # every rank of this module pruned: nothing to copy from
            sources = [sources[k] for k in torch.randperm(len(sources), generator=generator).tolist()]
            a, b = lora_weights(self.layers[name])
            snap_a, snap_b = self.snapshot[m]
            gate = self.gates[m]
            for j, i in zip(slots, sources):
                a[j, :] = snap_a[i, :]
                b[:, j] = snap_b[:, i]
                gate[i] = gate[j] = (gate[i] + gate[j]) / 2
            self._reset_moments(optimizer, a, rows=slots)
            self._reset_moments(optimizer, b, cols=slots)
            refilled += len(slots)
        for gate in self.gates:
            self._reset_moments(optimizer, gate)
        self.rounds.append({"step": step, "keep_share": round(self.keep_share(step), 4), "refilled_ranks": refilled})

    @staticmethod
    def _reset_moments(optimizer, param, rows=None, cols=None) -> None:
        state = optimizer.state.get(param)
        if not state:
            return
        for key in ("exp_avg", "exp_avg_sq"):
            if rows is not None:
                state[key][rows, :] = 0
            elif cols is not None:
                state[key][:, cols] = 0
            else:
                state[key].zero_()

    # -- checkpoints and the result ----------------------------------------------------------
    def state_dict(self) -> dict:
        return {"gates": [g.detach().cpu() for g in self.gates], "rounds": self.rounds,
                "snapshot": None if self.snapshot is None else [(a.cpu(), b.cpu()) for a, b in self.snapshot]}

    def resume(self, model: nn.Module, state: dict) -> nn.Module:
        with torch.no_grad():
            for gate, saved in zip(self.gates, state["gates"]):
                gate.copy_(saved)
        device = self.gates[0].device
        self.snapshot = None if state["snapshot"] is None else [(a.to(device), b.to(device)) for a, b in state["snapshot"]]
        self.rounds = list(state["rounds"])
        return model

    @torch.no_grad()
    def folded(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Base module name -> (diag(s) A, B): the gate folded into A."""
        out = {}
        for m, name in enumerate(self.names):
            a, b = lora_weights(self.layers[name])
            out[name] = (self.scores(m).float()[:, None] * a.float(), b.float())  # (r, in), (out, r)
        return out

    def export(self, model: nn.Module, out: Path) -> Path:
        return write_plain_lora(out, self.folded(), rank=self.rank, lora_alpha=self.config.lora_alpha,
                                target_modules=list(self.config.target_modules))

    def record(self) -> dict:
        return {"interval": self.interval, "expand_until": self.expand_until, "tau": self.tau, "rounds": self.rounds}
