"""Register a base-model version: the demo GGUF (converted) or any local Hugging Face folder."""

import shutil
from pathlib import Path

from adapters.registry.models import BaseVersion
from adapters.registry.repository import Registry
from migration.base_versions.architecture import read_architecture
from migration.base_versions.architecture_diff import architecture_differences
from migration.base_versions.gguf_import import DEMO_BASE_NAME, convert_gguf, demo_gguf_path
from server.errors import ConflictError, InvalidRequestError

HF_FILES = ("*.json", "*.safetensors", "*.jinja", "*.model", "*.txt")


def import_base(registry: Registry, bases_dir: Path, *, name: str, source: Path | None,
                version: int | None = None) -> BaseVersion:
    """Copy (or convert) ``source`` into ``bases_dir`` and register it; ``None`` = the demo GGUF."""
    gguf = demo_gguf_path() if source is None else source if source.suffix == ".gguf" else None
    staging = bases_dir / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    if gguf is not None:
        convert_gguf(gguf, staging)
    elif source.is_dir():
        staging.mkdir(parents=True)
        for pattern in HF_FILES:
            for f in source.glob(pattern):
                shutil.copy2(f, staging / f.name)
    else:
        raise InvalidRequestError(f"{source} is neither a .gguf file nor a Hugging Face model folder")
    try:
        arch = read_architecture(staging)
        latest = registry.find_base_version(name)
        if latest is not None and latest.fingerprint != arch.fingerprint:
            differences = architecture_differences(read_architecture(Path(latest.path)), arch)
            raise InvalidRequestError(
                f"{name}: the new weights' architecture differs from {latest.ref}, so its adapters cannot move "
                f"there; import it under another base name. Differences: {'; '.join(differences)}",
                code="architecture_mismatch")
        target_version = version or (latest.version + 1 if latest else 1)
        if registry.find_base_version(name, target_version) is not None:
            raise ConflictError(f"base model {name}@{target_version} already exists", code="base_version_exists")
        final = bases_dir / name / f"v{target_version}"
        shutil.rmtree(final, ignore_errors=True)  # left by an import that crashed before registering
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)
        return registry.add_base_version(
            name, target_version, path=str(final.resolve()), fingerprint=arch.fingerprint,
            architecture=arch.to_json(), source=str(gguf or source))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def import_demo_if_missing(registry: Registry, bases_dir: Path) -> BaseVersion:
    return registry.find_base_version(DEMO_BASE_NAME) or import_base(
        registry, bases_dir, name=DEMO_BASE_NAME, source=None)
