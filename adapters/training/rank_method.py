"""How a run spends its LoRA rank: the trainer's hooks into one method, and plain LoRA (all
hooks empty) as the base every other method extends."""

from pathlib import Path

import torch
from torch import nn

from adapters.training.config import TrainingConfig


class RankMethod:
    """Plain LoRA. The trainer calls, per step: ``restructure_due`` (and ``restructure``),
    ``before_forward``, ``penalty``, ``after_backward``, ``after_step``; at the end ``export``."""

    def __init__(self, model: nn.Module, config: TrainingConfig, steps: int):
        self.config = config

    def parameters(self) -> list[nn.Parameter]:
        """Trainable tensors besides the LoRA weights (gates, masks)."""
        return []

    def start(self, step: int) -> None:
        """Called once before the loop, at step 0 or the step a resumed run carries on from."""

    def restructure_due(self, step: int) -> bool:
        return False

    def restructure(self, model: nn.Module) -> nn.Module:
        return model

    def before_forward(self, attention_mask: torch.Tensor) -> None:
        pass

    def penalty(self) -> torch.Tensor | None:
        return None

    def after_backward(self, step: int) -> None:
        pass

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        pass

    def can_checkpoint(self, step: int) -> bool:
        return True

    def state_dict(self) -> dict:
        return {}

    def resume(self, model: nn.Module, state: dict) -> nn.Module:
        return model

    def export(self, model: nn.Module, out: Path) -> Path:
        model.save_pretrained(out, safe_serialization=True)
        return out

    def record(self) -> dict:
        return {}


def make_rank_method(model: nn.Module, config: TrainingConfig, steps: int) -> RankMethod:
    from adapters.training.beam_lora import BeamLoRA
    from adapters.training.light_peft import LightPEFT

    kind = {"lora": RankMethod, "beamlora": BeamLoRA, "light-peft": LightPEFT}[config.rank_method]
    return kind(model, config, steps)
