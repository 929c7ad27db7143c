"""Hyperparameters of a LoRA / Trans-PEFT training run (unknown keys are refused)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["trans-peft", "lora"] = "trans-peft"
    """trans-peft weakens the FFN while training; lora is the plain baseline."""
    p_m: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Trans-PEFT intra-layer masking: drop probability of each FFN intermediate activation."""
    p_c: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Trans-PEFT cross-layer dropping: probability of skipping a layer's whole FFN per forward pass."""
    rank: int = Field(default=16, ge=1, le=256)
    """LoRA rank r."""
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
    """Seeds data order, LoRA init and the Trans-PEFT masks."""
    checkpoint_every: int = Field(default=50, ge=1)
    """Optimizer steps between checkpoints (a killed run resumes from the last one)."""

    @model_validator(mode="after")
    def _alpha(self) -> "TrainingConfig":
        if self.lora_alpha is None:
            self.lora_alpha = 2.0 * self.rank
        return self
