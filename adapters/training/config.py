"""Hyperparameters of a training run (unknown keys are refused).

``method`` picks how the rank is spent and whether the FFN is weakened:
- ``lora``: plain LoRA, the baseline;
- ``trans-peft``: LoRA with Trans-PEFT's FFN weakening (p_m, p_c);
- ``beamlora``: BeamLoRA's rank beam search at a fixed rank (gates, prune and expand);
- ``light-peft``: Light-PEFT's early pruning of modules and ranks (and, optionally, of the base);
- ``beamlora+trans-peft`` / ``light-peft+trans-peft``: either with the FFN weakened too.
Every method's result is a plain PEFT LoRA of rank ``rank`` on the unpruned base.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
Method = Literal["trans-peft", "lora", "beamlora", "light-peft", "beamlora+trans-peft", "light-peft+trans-peft"]


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = "trans-peft"
    """How the adapter is trained; see the module docstring."""
    p_m: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Trans-PEFT intra-layer masking: drop probability of each FFN intermediate activation."""
    p_c: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Trans-PEFT cross-layer dropping: probability of skipping a layer's whole FFN per forward pass."""
    weakening_schedule: Literal["constant", "anneal"] = "constant"
    """Trans-PEFT: keep p_m/p_c all run (the paper), or anneal them to 0 by the last step (cosine)."""
    rank: int = Field(default=16, ge=1, le=256)
    """LoRA rank r (BeamLoRA keeps it; Light-PEFT prunes below it and pads the result back)."""
    lora_alpha: float | None = Field(default=None, gt=0)
    """LoRA alpha; default 2 x rank (the official Trans-PEFT scripts use r=64, alpha=128)."""
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input, as in the official scripts."""
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    """Modules the LoRA adapts; attention projections by default, as in the paper."""
    n_epochs: int = Field(default=1, ge=1, le=100)
    """Passes over the training examples."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (overrides n_epochs when set)."""
    learning_rate: float = Field(default=3e-4, gt=0, le=1.0)
    """Peak AdamW learning rate (cosine decay after warm-up)."""
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    """Fraction of steps with linear warm-up."""
    batch_size: int = Field(default=4, ge=1, le=512)
    """Examples per optimizer step."""
    max_seq_len: int = Field(default=512, ge=8)
    """Examples longer than this (prompt + completion tokens) are refused up front."""
    held_out_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the examples kept out of training as the adapter's eval set (no validation file given)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seeds data order, LoRA init, the Trans-PEFT masks and BeamLoRA's pairing."""
    checkpoint_every: int = Field(default=50, ge=1)
    """Optimizer steps between checkpoints (a killed run resumes from the last one)."""

    beam_interval: int | None = Field(default=None, ge=2)
    """BeamLoRA: steps between prune-and-expand rounds (T); default steps / 10, as the released
    script's 3000 of about 32,000 steps."""
    beam_expand_until: float = Field(default=2 / 3, gt=0.0, le=1.0)
    """BeamLoRA: share of the run during which ranks are pruned and expanded (T_end; two of three epochs)."""
    beam_tau: float | None = Field(default=None, gt=0.0)
    """BeamLoRA: gate softmax temperature; default 0.05 (0.03 when learning_rate < 1e-4), as released."""

    light_estimation_ratio: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Light-PEFT: share of the steps spent estimating importance before pruning."""
    light_module_prune: float = Field(default=0.75, ge=0.0, lt=1.0)
    """Light-PEFT: share of LoRA modules pruned (least important, globally)."""
    light_rank_prune: float = Field(default=0.5, ge=0.0, lt=1.0)
    """Light-PEFT: share of the kept modules' ranks pruned (global quantile of rank importance)."""
    light_prune_base: bool = False
    """Light-PEFT: also prune a third of the base's FFN neurons (globally) and of each layer's attention
    heads for training; the adapter is still served on the unpruned base."""
    light_mask_l1: float = Field(default=1e-4, ge=0.0)
    """Light-PEFT: L1 penalty on the head and neuron masks during estimation."""

    @model_validator(mode="after")
    def _alpha(self) -> "TrainingConfig":
        if self.lora_alpha is None:
            self.lora_alpha = 2.0 * self.rank
        return self

    @property
    def rank_method(self) -> str:
        """lora | beamlora | light-peft: how the rank is spent."""
        return {"trans-peft": "lora"}.get(self.method.removesuffix("+trans-peft"), self.method.removesuffix("+trans-peft"))

    @property
    def weakens_ffn(self) -> bool:
        return self.method.endswith("trans-peft")
