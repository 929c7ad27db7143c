"""The checks an adapter passes before any worker sees it, at upload and again before a migration
tries it on a new base version: its config, its weight file's header, both against the base's
architecture, and only modules the workers serve (vLLM would ignore others' weights silently)."""

from pathlib import Path

from adapters.format.base_architecture import BaseArchitecture
from adapters.format.peft_config import LoraConfig, check_served_targets, parse_lora_config
from adapters.format.safetensors_header import read_header
from adapters.validation.against_base import check_against_base


def check_statically(config_json: bytes, weights_path: Path, architecture: dict, *, max_rank: int,
                     served_targets: frozenset[str]) -> LoraConfig:
    """The parsed config, or AdapterInvalidError saying what does not fit."""
    config = parse_lora_config(config_json, max_rank=max_rank)
    header = read_header(weights_path, display_name="adapter_model.safetensors")
    check_against_base(config, header, BaseArchitecture.from_json(architecture))
    check_served_targets(config, served_targets)
    return config
