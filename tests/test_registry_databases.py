"""The registry on each supported database (SQLite and a real PostgreSQL server): the same
Alembic schema, the same queries, and the guarantees concurrent gateways rely on."""

import threading
from datetime import timedelta

import pytest

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.file_repository import FileRepository
from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.job_leases import GroupCap, JobLeases
from adapters.registry.migration_repository import MigrationRepository
from adapters.registry.models import AdapterStatus, FineTuningJob, JobStatus, MigrationStatus, utcnow
from adapters.registry.blob_references import BlobReferences
from adapters.registry.registry import Registry
from adapters.errors import ConflictError, NotFoundError

ARCH = {"model_type": "llama", "linear_modules": {}}


@pytest.fixture()
def sessions(database_url):
    engine = make_engine(database_url)
    upgrade_schema(engine)
    upgrade_schema(engine)  # idempotent: a second gateway starting on the same database
    yield make_session_factory(engine)
    engine.dispose()


def add_adapter(registry, tenant, name, base, **overrides):
    fields = dict(rank=8, lora_alpha=16.0, target_modules=["q_proj"], config_sha256="c" * 64,
                  weights_sha256="w" * 64, size_bytes=10, status=AdapterStatus.ready)
    return registry.add_adapter(tenant, name, base, **{**fields, **overrides})


def test_tenants_keys_bases_and_adapter_versions(sessions):
    registry = Registry(sessions)
    tenant, key = registry.create_tenant("acme")
    assert registry.tenant_for_key(key).name == "acme" and registry.tenant_for_key("psk-nope") is None
    with pytest.raises(ConflictError):
        registry.create_tenant("acme")
    v1 = registry.add_base_version("tiny", None, path="/b/1", fingerprint="f", architecture=ARCH, source="s")
    v2 = registry.add_base_version("tiny", None, path="/b/2", fingerprint="f", architecture=ARCH, source="s")
    assert (v1.ref, v2.ref) == ("tiny@1", "tiny@2") and [v.version for v in registry.versions_of("tiny")] == [2, 1]
    first = add_adapter(registry, tenant, "support", v1)
    second = add_adapter(registry, tenant, "support", v1, weights_sha256="x" * 64)
    assert (first.version, second.version) == (1, 2)
    assert first.trained_base_version.ref == "tiny@1" and not first.pinned
    assert registry.resolve_adapter(tenant.id, "support", None).version == 2
    assert registry.tenant_usage(tenant.id) == (2, 20)
    references = BlobReferences(registry.sessions)
    assert references.referenced("x" * 64) and not references.referenced("z" * 64)
    registry.mark_deleted(tenant.id, "support", 2)
    assert registry.resolve_adapter(tenant.id, "support", None).version == 1
    assert {v.ref for v in registry.served_base_versions()} == {"tiny@1", "tiny@2"}


def test_concurrent_registrations_get_distinct_versions(sessions):
    registry = Registry(sessions)
    tenant, _ = registry.create_tenant("racer")
    base = registry.add_base_version("tiny", None, path="/b", fingerprint="f", architecture=ARCH, source="s")
    versions, errors = [], []

    def register() -> None:
        try:
            versions.append(add_adapter(registry, tenant, "same", base).version)
        except ConflictError as e:  # allowed: the caller is told to retry
            errors.append(e)

    threads = [threading.Thread(target=register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(versions) == len(set(versions)) and len(versions) + len(errors) == 6 and versions


def test_migration_jobs_promote_and_roll_back_in_one_transaction(sessions):
    registry, repo = Registry(sessions), MigrationRepository(sessions)
    tenant, _ = registry.create_tenant("acme")
    v1 = registry.add_base_version("tiny", None, path="/b/1", fingerprint="f", architecture=ARCH, source="s")
    v2 = registry.add_base_version("tiny", None, path="/b/2", fingerprint="f", architecture=ARCH, source="s")
    a, b = add_adapter(registry, tenant, "a", v1), add_adapter(registry, tenant, "b", v1)
    job = repo.create_job(v1, v2, [a.id, b.id], thresholds={}, selection=None, skipped=[])
    with pytest.raises(ConflictError, match="already in migration job"):
        repo.create_job(v1, v2, [b.id], thresholds={}, selection=None, skipped=[])
    items = {i.adapter_id: i.id for i in job.items}
    assert repo.finish_item(items[a.id], "migrated", [], {"kind": "eval_set"}) is True
    assert repo.finish_item(items[a.id], "migrated", [], None) is False  # recorded once only
    assert repo.finish_item(items[b.id], "kept_on_old", ["retention 10% < 90%"], None) is False
    assert registry.get_adapter(a.id).base_version.ref == "tiny@2"
    assert registry.get_adapter(b.id).migration["decision"] == "kept_on_old"
    with pytest.raises(ConflictError, match="cancel it first"):
        repo.roll_back(job.id)
    repo.update_job(job.id, status=MigrationStatus.succeeded)
    assert [x.id for x in repo.roll_back(job.id)] == [a.id]
    assert registry.get_adapter(a.id).base_version.ref == "tiny@1"
    assert repo.get_job(job.id).status == MigrationStatus.rolled_back


def test_fine_tuning_files(sessions):
    registry, files = Registry(sessions), FileRepository(sessions)
    tenant, _ = registry.create_tenant("trainer")
    other, _ = registry.create_tenant("someone-else")
    stored = files.add_file(tenant.id, "train.jsonl", "fine-tune", 10, "s" * 64)
    assert files.get_file(tenant.id, stored.id).filename == "train.jsonl"
    assert [f.id for f in files.list_files(tenant.id)] == [stored.id] and files.list_files(other.id) == []
    with pytest.raises(NotFoundError):
        files.get_file(other.id, stored.id)  # another tenant's file does not exist for it
    files.delete_file(tenant.id, stored.id)
    assert files.list_files(tenant.id) == []


def test_claims_capped_per_tenant_hold_under_simultaneous_claims(sessions):
    """Gateways claiming different jobs of one tenant at the same instant: the per-tenant cap
    holds (each claim counts the others inside its own UPDATE, serialised per tenant)."""
    registry, repo = Registry(sessions), FineTuningRepository(sessions)
    leases = JobLeases(sessions, FineTuningJob, queued=JobStatus.queued, running=JobStatus.running)
    base = registry.add_base_version("tiny", None, path="/b", fingerprint="f", architecture=ARCH, source="s")
    busy, _ = registry.create_tenant("busy")
    other, _ = registry.create_tenant("other")
    training = FileRepository(sessions).add_file(busy.id, "train.jsonl", "fine-tune", 10, "s" * 64)

    def job(tenant) -> str:
        return repo.add_job(tenant_id=tenant.id, base_version_id=base.id, model="tiny", training_file=training.id,
                            validation_file=None, suffix=None, hyperparameters={}).id

    jobs = [job(busy) for _ in range(6)]
    start, won = threading.Barrier(len(jobs)), []

    def claim(job_id: str) -> None:
        start.wait()
        if leases.claim(job_id, f"gateway-{job_id}", 30, GroupCap("tenant_id", busy.id, 1)) is not None:
            won.append(job_id)

    threads = [threading.Thread(target=claim, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    # Another tenant is not held back; the first tenant gets a second slot when the cap allows it.
    assert leases.claim(job(other), "gateway-x", 30, GroupCap("tenant_id", other.id, 1)) == ""
    assert leases.claim(jobs[0] if jobs[0] not in won else jobs[1], "gateway-y", 30,
                        GroupCap("tenant_id", busy.id, 2)) == ""
    # A job whose gateway died (lease expired) no longer counts against the tenant.
    leases.claim(won[0], "gateway-z", 30)  # still live: not claimable
    repo.update_job(won[0], lease_expires_at=utcnow() - timedelta(seconds=1))
    free = next(j for j in jobs if repo.get_job(j).status == JobStatus.queued)
    assert leases.claim(free, "gateway-w", 30, GroupCap("tenant_id", busy.id, 2)) == ""


def test_the_schema_migrations_build_exactly_what_the_models_describe(sessions):
    """Alembic's own comparison of the migrated database with the models (tables, columns, types,
    nullability, indexes): a column added to a model without a migration, or the reverse, fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from adapters.registry.models import Base

    engine = sessions.kw["bind"]
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, Base.metadata)
                       if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert differences == []
