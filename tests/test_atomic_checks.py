"""Check-then-write sequences that must be atomic across gateways, on SQLite and on a real
PostgreSQL server: the per-tenant adapter quota, and an adapter taken by two migration jobs at
once. Each test parks the first writer right after its check; the second writer must then wait
(it cannot check until the first has written), which is what the lock guarantees."""

import threading

import pytest

from adapters.errors import ConflictError, QuotaExceededError
from adapters.registry.adapter_quota import AdapterQuota
from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.migration_repository import MigrationRepository
from adapters.registry.adapter_repository import AdapterRepository
from adapters.registry.registry import Registry
from tests.test_registry_databases import ARCH, add_adapter

PARK_S = 1.5  # how long the first writer waits, after its check, for the second to check too


@pytest.fixture()
def registry(database_url):
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield Registry(make_session_factory(engine))
    engine.dispose()


def race(first, second, monkeypatch, target, name):
    """Run ``first`` and ``second`` in threads; ``first`` parks right after ``target.name`` (the
    check it makes under the lock) until ``second`` has made the same check, or PARK_S passes."""
    first_checked, second_checked = threading.Event(), threading.Event()
    original = getattr(target, name)

    def parking(*args, **kwargs):
        result = original(*args, **kwargs)
        if threading.current_thread().name == "first":
            first_checked.set()
            second_checked.wait(PARK_S)  # returns at once only if the check is not serialized
        else:
            second_checked.set()
        return result

    monkeypatch.setattr(target, name, staticmethod(parking) if isinstance(target.__dict__.get(name), staticmethod)
                        else parking)
    outcomes = {}

    def run(label, fn):
        try:
            outcomes[label] = fn()
        except Exception as e:  # noqa: BLE001 - the outcome is what the test looks at
            outcomes[label] = e

    threads = [threading.Thread(target=run, args=(label, fn), name=label)
               for label, fn in (("first", first), ("second", second))]
    threads[0].start()
    assert first_checked.wait(30)  # the first has checked, under its lock, and is parked
    threads[1].start()
    for t in threads:
        t.join(60)
    return outcomes


def test_two_uploads_cannot_both_take_the_last_place(registry, monkeypatch):
    tenant, _ = registry.create_tenant("acme")
    base = registry.add_base_version("tiny", None, path="/b/1", fingerprint="f", architecture=ARCH, source="s")
    quota = AdapterQuota(max_adapters=2, max_bytes=10**9)
    add_adapter(registry, tenant, "first", base, quota=quota)
    outcomes = race(lambda: add_adapter(registry, tenant, "a", base, quota=quota),
                    lambda: add_adapter(registry, tenant, "b", base, quota=quota),
                    monkeypatch, AdapterRepository, "_usage")
    errors = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], QuotaExceededError), outcomes
    assert registry.tenant_usage(tenant.id)[0] == 2


def test_two_migration_jobs_cannot_both_take_an_adapter(registry, monkeypatch):
    tenant, _ = registry.create_tenant("acme")
    v1 = registry.add_base_version("tiny", None, path="/b/1", fingerprint="f", architecture=ARCH, source="s")
    v2 = registry.add_base_version("tiny", None, path="/b/2", fingerprint="f", architecture=ARCH, source="s")
    adapter = add_adapter(registry, tenant, "a", v1)
    jobs = MigrationRepository(registry.sessions)

    def create():
        return jobs.create_job(v1, v2, [adapter.id], thresholds={}, selection=None, skipped=[])

    outcomes = race(create, create, monkeypatch, MigrationRepository, "_busy_item")
    errors = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ConflictError), outcomes
