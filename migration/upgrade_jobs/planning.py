"""Turn a migration request into a job: check the versions, pick the adapters, refuse what
cannot be done before anything is written."""

from adapters.registry.migration_repository import MigrationRepository
from adapters.registry.models import Adapter, BaseVersion, MigrationJob
from adapters.registry.registry import Registry
from adapters.registry.names import split_ref
from migration.validation_gate.gate import GateThresholds
from adapters.errors import InvalidRequestError, NotFoundError


def _version(versions: list[BaseVersion], name: str, number: int, param: str) -> BaseVersion:
    found = next((v for v in versions if v.version == number), None)
    if found is None:
        known = ", ".join(str(v.version) for v in reversed(versions))
        raise NotFoundError(f"base model {name}@{number} does not exist (versions: {known})",
                            code="base_version_not_found", param=param)
    return found


def choose_versions(registry: Registry, name: str, from_version: int | None,
                    to_version: int | None) -> tuple[BaseVersion, BaseVersion]:
    versions = registry.versions_of(name)  # newest first
    if not versions:
        raise NotFoundError(f"base model {name!r} does not exist", code="base_model_not_found", param="base_model")
    to = _version(versions, name, to_version, "to_version") if to_version else versions[0]
    if from_version is None:
        older = [v for v in versions if v.version < to.version]
        if not older:
            raise InvalidRequestError(f"{to.ref} is the oldest version of {name}: there is nothing to migrate "
                                      "from; import a newer version first", code="invalid_migration_direction")
        return older[0], to
    old = _version(versions, name, from_version, "from_version")
    if to.version <= old.version:
        raise InvalidRequestError(f"a migration goes from an older version to a newer one; {old.ref} -> {to.ref} "
                                  "is not", code="invalid_migration_direction", param="to_version")
    return old, to


def _selected(adapters: list[Adapter], tenants: list[str] | None, refs: list[str] | None,
              old: BaseVersion) -> list[Adapter]:
    chosen = adapters
    if tenants is not None:
        unknown = sorted(set(tenants) - {a.tenant.name for a in adapters})
        if unknown:
            raise NotFoundError(f"no ready adapter of tenant(s) {unknown} is served on {old.ref}",
                                code="adapter_not_found", param="tenants")
        chosen = [a for a in chosen if a.tenant.name in tenants]
    if refs is not None:
        picked: dict[int, Adapter] = {}
        for ref in refs:
            tenant, slash, rest = ref.partition("/")
            if not slash:
                raise InvalidRequestError(f"adapter {ref!r}: write it as 'tenant/name' or 'tenant/name@version'",
                                          param="adapters")
            name, version = split_ref(rest)
            hits = [a for a in chosen if a.tenant.name == tenant and a.name == name
                    and (version is None or a.version == version)]
            if not hits:
                raise NotFoundError(f"adapter {ref!r} is not a ready adapter served on {old.ref}",
                                    code="adapter_not_found", param="adapters")
            picked.update((a.id, a) for a in hits)
        chosen = [a for a in chosen if a.id in picked]
    return chosen


def plan_job(registry: Registry, repo: MigrationRepository, *, base_model: str, from_version: int | None,
             to_version: int | None, tenants: list[str] | None, adapters: list[str] | None,
             thresholds: GateThresholds) -> MigrationJob:
    old, new = choose_versions(registry, base_model, from_version, to_version)
    if old.fingerprint != new.fingerprint:  # import refuses this; a hand-edited registry could not
        raise InvalidRequestError(f"{old.ref} and {new.ref} have different architectures; adapters cannot move",
                                  code="architecture_mismatch")
    chosen = _selected(registry.adapters_on(old.id), tenants, adapters, old)
    pinned = [a for a in chosen if a.pinned]
    items = [a for a in chosen if not a.pinned]
    if not items:
        why = f" ({len(pinned)} pinned by their tenants)" if pinned else ""
        raise InvalidRequestError(f"no ready adapter to migrate from {old.ref}{why}", code="nothing_to_migrate")
    selection = None if tenants is None and adapters is None else {"tenants": tenants, "adapters": adapters}
    skipped = [{"tenant": a.tenant.name, "adapter": f"{a.name}@{a.version}",
                "reason": f"pinned by its tenant to {old.ref}"} for a in pinned]
    return repo.create_job(old, new, [a.id for a in items], thresholds=thresholds.model_dump(),
                           selection=selection, skipped=skipped)
