"""Register a base-model version: the demo GGUF (converted) or any local Hugging Face folder."""

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from adapters.registry.models import BaseVersion
from adapters.registry.base_version_repository import BaseVersionRepository
from adapters.registry.names import check_name
from adapters.format.base_architecture import BaseArchitecture, read_architecture
from migration.base_versions.architecture_diff import architecture_differences
from migration.base_versions.gguf_import import DEMO_BASE_NAME, convert_gguf, demo_gguf_path
from adapters.errors import ConflictError, InvalidRequestError

HF_FILES = ("*.json", "*.safetensors", "*.jinja", "*.model", "*.txt")


def import_base(registry: BaseVersionRepository, bases_dir: Path, *, name: str, source: Path | None,
                version: int | None = None, in_place: bool = False) -> BaseVersion:
    """Copy (or convert) ``source`` into ``bases_dir`` and register it; ``None`` = the demo GGUF.
    ``in_place``: register the Hugging Face folder ``source`` where it is, for a read-only folder
    every machine has at the same path (baked into the image): a fleet then shares no disk.

    The name is checked before any path is built from it; each import stages in a folder of its
    own, and imports into one bases folder run one at a time (a lock on the folder itself, so
    across processes too; imports are rare)."""
    check_name("base model", name)
    gguf = demo_gguf_path() if source is None else source if source.suffix == ".gguf" else None
    if gguf is None and not (source.is_dir() and (source / "config.json").is_file()):
        raise InvalidRequestError(f"{source} is neither a .gguf file nor a Hugging Face model folder "
                                  "(a folder with config.json)", param="source")
    if in_place:
        if gguf is not None:
            raise InvalidRequestError("only a Hugging Face folder can be registered in place (a .gguf is "
                                      "converted into the bases folder)", param="source")
        return _register_in_place(registry, name, version, source.resolve())
    bases_dir.mkdir(parents=True, exist_ok=True)
    with _import_lock(bases_dir):
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=bases_dir))
        try:
            arch = _stage(staging, gguf, source)
            return _register(registry, bases_dir, name, version, staging, arch, str(gguf or source))
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _import_lock(bases_dir: Path):
    fd = os.open(bases_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _stage(staging: Path, gguf: Path | None, source: Path | None) -> BaseArchitecture:
    try:
        if gguf is not None:
            convert_gguf(gguf, staging)
        else:
            for pattern in HF_FILES:
                for f in source.glob(pattern):
                    if f.is_file() and not f.is_symlink():
                        shutil.copy2(f, staging / f.name)
        return read_architecture(staging)  # a broken config or weight file is the caller's error
    except InvalidRequestError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise InvalidRequestError(f"{gguf or source} is not a readable model: {type(e).__name__}: {e}",
                                  param="source") from None


def _register(registry: BaseVersionRepository, bases_dir: Path, name: str, version: int | None, staging: Path,
              arch: BaseArchitecture, source: str) -> BaseVersion:
    latest = registry.find_base_version(name)
    _check_same_architecture(name, latest, arch)
    target_version = version or (latest.version + 1 if latest else 1)
    if registry.find_base_version(name, target_version) is not None:
        raise ConflictError(f"base model {name}@{target_version} already exists", code="base_version_exists")
    final = (bases_dir / name / f"v{target_version}").resolve()
    if not final.is_relative_to(bases_dir.resolve()):  # defence in depth: check_name allows no '/'
        raise InvalidRequestError(f"base model name {name!r} leaves the bases folder", param="name")
    shutil.rmtree(final, ignore_errors=True)  # left by an import that crashed before registering
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)
    return registry.add_base_version(name, target_version, path=str(final), fingerprint=arch.fingerprint,
                                     architecture=arch.to_json(), source=source)


def _register_in_place(registry: BaseVersionRepository, name: str, version: int | None, folder: Path) -> BaseVersion:
    try:
        arch = read_architecture(folder)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise InvalidRequestError(f"{folder} is not a readable model: {type(e).__name__}: {e}", param="source") from None
    latest = registry.find_base_version(name)
    _check_same_architecture(name, latest, arch)
    target_version = version or (latest.version + 1 if latest else 1)
    if registry.find_base_version(name, target_version) is not None:
        raise ConflictError(f"base model {name}@{target_version} already exists", code="base_version_exists")
    return registry.add_base_version(name, target_version, path=str(folder), fingerprint=arch.fingerprint,
                                     architecture=arch.to_json(), source=str(folder))


def _check_same_architecture(name: str, latest: BaseVersion | None, arch: BaseArchitecture) -> None:
    if latest is not None and latest.fingerprint != arch.fingerprint:
        differences = architecture_differences(read_architecture(Path(latest.path)), arch)
        raise InvalidRequestError(
            f"{name}: the new weights' architecture differs from {latest.ref}, so its adapters cannot move "
            f"there; import it under another base name. Differences: {'; '.join(differences)}",
            code="architecture_mismatch")


def import_demo_if_missing(registry: BaseVersionRepository, bases_dir: Path) -> BaseVersion:
    return registry.find_base_version(DEMO_BASE_NAME) or import_base(
        registry, bases_dir, name=DEMO_BASE_NAME, source=None)
