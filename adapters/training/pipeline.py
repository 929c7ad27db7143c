"""One training run from raw files to a PEFT LoRA folder plus its eval set: the piece shared by
the ``peftserve train`` CLI and the fine-tuning job runner."""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.training.config import TrainingConfig
from adapters.training.dataset import eval_set_jsonl, parse_records, split_held_out, tokenize
from adapters.training.trainer import Progress, total_steps, train
from adapters.errors import InvalidRequestError

MIN_EXAMPLES = 4


@dataclass(frozen=True)
class PreparedData:
    train: list  # TokenizedExample
    eval_set: bytes  # JSONL kept with the adapter for base-model migrations
    n_train: int
    n_eval: int


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    eval_set: bytes
    metadata: dict


def prepare(base_dir: Path, training: bytes, validation: bytes | None, config: TrainingConfig) -> PreparedData:
    """Parse and tokenize everything up front, so bad input fails before any training."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    records = parse_records(training, param="training_file")
    held = parse_records(validation, param="validation_file") if validation else None
    if held is None:
        records, held = split_held_out(records, config.held_out_fraction, config.seed)
    if len(records) < MIN_EXAMPLES:
        raise InvalidRequestError(f"training_file: {len(records)} training examples (after the held-out split); "
                                  f"at least {MIN_EXAMPLES} are needed", code="invalid_training_file",
                                  param="training_file")
    examples = tokenize(records, tokenizer, max_seq_len=config.max_seq_len)
    if held:
        tokenize(held, tokenizer, max_seq_len=config.max_seq_len, param="validation_file")
    return PreparedData(examples, eval_set_jsonl(held) if held else b"", len(records), len(held))


def run_training(base_dir: Path, data: PreparedData, config: TrainingConfig, work_dir: Path, *,
                 on_progress: Callable[[Progress], None] | None = None,
                 cancel: threading.Event | None = None, init_adapter: Path | None = None,
                 on_checkpoint: Callable[[int, Path], None] | None = None) -> TrainingResult:
    """``init_adapter``: a PEFT folder to continue from (same rank and targets as ``config``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outcome = train(base_dir, data.train, config, work_dir, pad_id=pad_id, on_progress=on_progress, cancel=cancel,
                    init_adapter=init_adapter, on_checkpoint=on_checkpoint)
    metadata = {"method": config.method, "hyperparameters": config.model_dump(), "train_examples": data.n_train,
                "held_out_examples": data.n_eval, "steps": total_steps(config, data.n_train),
                "training": outcome.record, "continued_from_adapter": init_adapter is not None}
    (work_dir / "eval.jsonl").write_bytes(data.eval_set)
    (work_dir / "training.json").write_text(json.dumps(metadata, indent=2))
    return TrainingResult(outcome.adapter_dir, data.eval_set, metadata)
