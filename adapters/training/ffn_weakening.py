"""Trans-PEFT ("Adapt Once, Thrive with Updates", ACL 2025): weaken the FFN sub-layers during
LoRA training so the adapter learns the task pattern in attention and leans less on FFN
knowledge, which is what continual training of the base changes most.

Two mechanisms, both active only while the model is in training mode:
- intra-layer knowledge masking (p_m): the FFN intermediate activation ``act(gate(x)) * up(x)``
  is multiplied by a fresh Bernoulli keep-mask (each element dropped with probability p_m,
  per token, per neuron, per step) before the down projection. No 1/(1-p) rescaling, as in
  the official code.
- cross-layer knowledge dropping (p_c): per decoder layer and forward pass, with probability
  p_c the whole FFN sub-layer is skipped and the residual passes unchanged. Attention always
  runs. (The official Llama variant also drops attention and adds the residual twice; we do not.)

Implemented with forward hooks on modules found by structure, so any Llama / Qwen2 /
Mistral-style transformers model works without forked model files. At inference nothing
changes: the trained adapter is a plain PEFT LoRA.
"""

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class WeakeningStats:
    """Counters for checking the realised rates against p_m and p_c."""

    masked: int = 0  # intermediate activations zeroed
    activations: int = 0  # intermediate activations seen
    skipped: int = 0  # FFN sub-layers skipped
    ffn_calls: int = 0  # FFN sub-layer calls
    attention_calls: int = 0


@dataclass
class FFNWeakening:
    p_m: float = 0.1
    p_c: float = 0.1
    scale: float = 1.0  # multiplies p_m and p_c (the trainer anneals it when asked to)
    stats: WeakeningStats = field(default_factory=WeakeningStats)
    _handles: list = field(default_factory=list)

    def __post_init__(self):
        for name, p in (("p_m", self.p_m), ("p_c", self.p_c)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}={p} must be in [0, 1)")

    def attach(self, model: nn.Module) -> "FFNWeakening":
        """Hook every decoder layer's FFN; returns self. Raises if no FFN is found."""
        layers = find_decoder_layers(model)
        for layer in layers:
            mlp = layer.mlp
            self._handles.append(mlp.register_forward_hook(self._maybe_drop_ffn))
            self._handles.append(mlp.down_proj.register_forward_pre_hook(self._mask_intermediate))
            self._handles.append(layer.self_attn.register_forward_hook(self._count_attention))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _mask_intermediate(self, module: nn.Module, args: tuple):
        p_m = self.p_m * self.scale
        if not module.training or p_m == 0.0:
            return None
        (h, *rest) = args  # h: (B, T, I) intermediate activation act(gate(x)) * up(x)
        keep = torch.rand(h.shape, device=h.device) >= p_m  # (B, T, I)
        self.stats.masked += int((~keep).sum())
        self.stats.activations += keep.numel()
        return (h * keep.to(h.dtype), *rest)

    def _maybe_drop_ffn(self, module: nn.Module, args: tuple, output: torch.Tensor):
        if not module.training:
            return None
        self.stats.ffn_calls += 1
        p_c = self.p_c * self.scale
        if p_c > 0.0 and torch.rand(()).item() < p_c:
            self.stats.skipped += 1
            # The layer adds the FFN output to the residual, so a zero output skips the sub-layer.
            return torch.zeros_like(output)  # (B, T, C)
        return None

    def _count_attention(self, module: nn.Module, args, output):
        if module.training:
            self.stats.attention_calls += 1


def find_decoder_layers(model: nn.Module) -> list[nn.Module]:
    """Decoder layers = modules with ``self_attn`` and an ``mlp`` that has ``down_proj``."""
    layers = [m for m in model.modules()
              if hasattr(m, "self_attn") and hasattr(m, "mlp") and hasattr(m.mlp, "down_proj")]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no decoder layer with self_attn and mlp.down_proj found; "
                         "Trans-PEFT supports Llama / Qwen2 / Mistral-style models")
    return layers
