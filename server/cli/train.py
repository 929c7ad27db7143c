"""``peftserve train``: train an adapter locally (no server needed)."""

from pathlib import Path
from typing import Annotated

import typer

from adapters.errors import PeftServeError
from server.cli.command_output import JsonOpt, console, emit, fail
from server.cli.local_registry import local_registry


def train(
    data: Annotated[Path, typer.Argument(help="Training JSONL: prompt/completion or chat messages.")],
    out: Annotated[Path, typer.Option(help="Work folder: checkpoints, adapter/, eval.jsonl (re-run resumes).")],
    base: Annotated[str | None, typer.Option(help="Registered base, name or name@version.")] = None,
    base_dir: Annotated[Path | None, typer.Option(help="Or a local Hugging Face model folder.")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation JSONL (default: a held-out split).")] = None,
    method: Annotated[str, typer.Option(help="lora | trans-peft | beamlora | light-peft | beamlora+trans-peft | "
                                             "light-peft+trans-peft")] = "trans-peft",
    p_m: Annotated[float, typer.Option(help="Trans-PEFT FFN activation masking probability.")] = 0.1,
    p_c: Annotated[float, typer.Option(help="Trans-PEFT FFN sub-layer dropping probability.")] = 0.1,
    weakening_schedule: Annotated[str, typer.Option(help="Trans-PEFT: constant | anneal (p_m, p_c to 0).")] = "constant",
    light_prune_base: Annotated[bool, typer.Option(help="Light-PEFT: also prune base heads/FFN neurons while "
                                                        "training.")] = False,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default 16, or the continued adapter's).")] = None,
    from_adapter: Annotated[Path | None, typer.Option(help="Continue training this PEFT LoRA folder (same base; "
                                                           "its rank, alpha and targets).")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Train a LoRA adapter locally (Trans-PEFT by default; BeamLoRA, Light-PEFT alone or with it),
    showing step, loss and ETA. Any other hyperparameter goes through the fine-tuning API."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from adapters.training.config import TrainingConfig
    from adapters.training.pipeline import prepare, run_training

    folder = base_dir if base_dir is not None else _registered_base_path(base, as_json)
    try:
        shape = {"rank": rank or 16}
        if from_adapter is not None:
            shape = _continued_shape(from_adapter, rank)
        config = TrainingConfig(method=method, p_m=p_m, p_c=p_c, weakening_schedule=weakening_schedule,
                                light_prune_base=light_prune_base, **shape, n_epochs=epochs, max_steps=max_steps,
                                learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                checkpoint_every=checkpoint_every)
        prepared = prepare(folder, data.read_bytes(), validation.read_bytes() if validation else None, config)
    except (PeftServeError, ValueError, OSError) as e:
        fail(as_json, getattr(e, "message", str(e)))
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeRemainingColumn())
    with Progress(*columns, disable=as_json, console=console) as bar:
        task = bar.add_task("train", total=None, loss="-")

        def on_progress(p) -> None:
            bar.update(task, completed=p.step, total=p.total_steps, loss=f"{p.loss:.4f}")

        try:
            result = run_training(folder, prepared, config, out, on_progress=on_progress, init_adapter=from_adapter)
        except PeftServeError as e:
            fail(as_json, e.message)
    data_out = {"adapter_dir": str(result.adapter_dir), "eval_set": str(out / "eval.jsonl"), **result.metadata}
    emit(as_json, data_out, f"adapter written to {result.adapter_dir} ({result.metadata['steps']} steps, "
                             f"{result.metadata['held_out_examples']} held-out examples in {out / 'eval.jsonl'})")


def _continued_shape(folder: Path, rank: int | None) -> dict:
    """Rank, alpha and targets of the adapter to continue, read with the upload's strict parser."""
    from adapters.format.peft_config import parse_lora_config

    config = parse_lora_config((folder / "adapter_config.json").read_bytes(), max_rank=256)
    if rank is not None and rank != config.r:
        raise ValueError(f"--rank {rank} differs from the continued adapter's rank {config.r}")
    return {"rank": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules)}


def _registered_base_path(ref: str | None, as_json: bool) -> Path:
    from adapters.registry.names import split_ref

    if ref is None:
        fail(as_json, "give --base NAME[@VERSION] or --base-dir PATH")
    name, version = split_ref(ref)
    found = local_registry().find_base_version(name, version)
    if found is None:
        fail(as_json, f"base model {ref!r} is not registered")
    return Path(found.path)
