"""A training checkpoint folder as one file, so it can live in the blob store and a job taken
over on another machine resumes from it (server/fine_tuning/checkpoints.py moves the files).

The folder is what trainer.py writes: the PEFT adapter, optimizer, rank-method and RNG state,
and ``state.json`` with the step. The archive is a plain tar; unpacking refuses anything but
regular files at the top level (the bytes come from the shared store, hash-verified, but a
store is still not a place to trust paths from).
"""

import json
import shutil
import tarfile
from pathlib import Path

from adapters.training.trainer import CHECKPOINT


def checkpoint_step(folder: Path) -> int | None:
    """The step a checkpoint folder resumes from, or None when there is none (or half of one)."""
    state = folder / "state.json"
    if not state.is_file():
        return None
    try:
        return int(json.loads(state.read_text())["step"])
    except (ValueError, KeyError, TypeError):
        return None


def pack(folder: Path, dest: Path) -> Path:
    """Write ``folder``'s files to the tar ``dest`` (written whole, then renamed)."""
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name, recursive=False)
    tmp.replace(dest)
    return dest


def unpack(archive: Path, work_dir: Path) -> int:
    """Make ``work_dir/checkpoint`` the archive's checkpoint (replacing what was there);
    returns its step."""
    staging = work_dir / (CHECKPOINT + ".fetched")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive, "r") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name in ("", ".", ".."):
                raise ValueError(f"checkpoint archive {archive.name}: unexpected member {member.name!r}")
        tar.extractall(staging, filter="data")
    step = checkpoint_step(staging)
    if step is None:
        raise ValueError(f"checkpoint archive {archive.name} has no state.json")
    target, old = work_dir / CHECKPOINT, work_dir / (CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return step
