"""Compare two registered versions of one base model (the compatibility report)."""

from pathlib import Path

from adapters.registry.base_version_repository import BaseVersionRepository
from migration.compatibility.weight_change import compare_weights, compatibility_report
from adapters.errors import InvalidRequestError, NotFoundError


def compare_versions(registry: BaseVersionRepository, name: str, from_version: int, to_version: int) -> dict:
    if from_version == to_version:
        raise InvalidRequestError("compare two different versions", param="to_version")
    versions = []
    for v in (from_version, to_version):
        found = registry.find_base_version(name, v)
        if found is None:
            raise NotFoundError(f"base model {name}@{v} does not exist", code="base_model_not_found")
        versions.append(found)
    old, new = versions
    return compatibility_report(old.ref, new.ref, compare_weights(Path(old.path), Path(new.path)))
