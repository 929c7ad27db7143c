"""Blob references under races and crashes, on SQLite and on a real PostgreSQL server, with the
real local blob store: the interleavings are forced at the exact points where they used to lose
data, so each test fails on the old check-then-delete code."""

import io
import os
import time
from datetime import timedelta

import pytest

from adapters.registry.blob_references import BlobReferences
from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.models import utcnow
from adapters.registry.registry import Registry
from adapters.storage.blob_lifecycle import BlobLifecycle
from adapters.storage.blob_store import LocalBlobStore
from tests.test_registry_databases import ARCH, add_adapter

GRACE_S = 60.0


@pytest.fixture()
def world(database_url, tmp_path):
    engine = make_engine(database_url)
    upgrade_schema(engine)
    sessions = make_session_factory(engine)
    registry = Registry(sessions)
    tenant, _ = registry.create_tenant("acme")
    base = registry.add_base_version("tiny", None, path="/b/1", fingerprint="f", architecture=ARCH, source="s")
    blobs = LocalBlobStore(tmp_path / "blobs")
    yield registry, tenant, base, blobs, BlobLifecycle(blobs, BlobReferences(sessions), grace_s=GRACE_S)
    engine.dispose()


def test_a_delete_between_an_identical_uploads_store_and_its_row(world):
    """Upload B re-uses A's weights blob (already stored: nothing written); A is deleted and its
    blobs released right then, before B claims it. B must still end with its bytes."""
    registry, tenant, base, blobs, lifecycle = world
    data = b"the same weights"
    with lifecycle.stored_bytes(data) as (sha, _):
        add_adapter(registry, tenant, "a", base, weights_sha256=sha)

    calls = []

    def put_then_a_is_deleted():
        stored = blobs.put_stream(io.BytesIO(data))  # the first time: exists, nothing written
        if not calls:
            registry.mark_deleted(tenant.id, "a", None)
            assert lifecycle.release([sha]) == [sha]  # nothing references or claims it yet: it goes
        calls.append(stored)
        return stored

    with lifecycle.stored(put_then_a_is_deleted) as (same, _):
        assert same == sha
        add_adapter(registry, tenant, "b", base, weights_sha256=sha)
    assert blobs.exists(sha) and len(calls) == 2  # stored again after the claim found it gone


def test_a_release_while_a_reference_is_being_made_keeps_the_blob(world):
    registry, tenant, base, blobs, lifecycle = world
    with lifecycle.stored_bytes(b"shared") as (sha, _):
        add_adapter(registry, tenant, "a", base, weights_sha256=sha)
    registry.mark_deleted(tenant.id, "a", None)
    with lifecycle.stored_bytes(b"shared") as (same, _):
        assert lifecycle.release([sha]) == []  # B's claim protects it: no row yet, but coming
        add_adapter(registry, tenant, "b", base, weights_sha256=same)
    assert lifecycle.release([sha]) == [] and blobs.exists(sha)  # now B's row does
    registry.mark_deleted(tenant.id, "b", None)
    assert lifecycle.release([sha]) == [sha] and not blobs.exists(sha)


def test_sweeps_collect_orphans_only_after_the_grace_period(world):
    registry, tenant, base, blobs, lifecycle = world
    orphan, _ = blobs.put_stream(io.BytesIO(b"a crash came before its row"))
    with lifecycle.stored_bytes(b"kept") as (kept, _):
        add_adapter(registry, tenant, "a", base, weights_sha256=kept)
    claimed, _ = blobs.put_stream(io.BytesIO(b"a writer died holding a claim"))
    lifecycle.references.claim(claimed, at=utcnow() - timedelta(seconds=2 * GRACE_S))

    assert lifecycle.sweep().deleted == [claimed]  # the orphan is too young to be sure
    old = time.time() - 2 * GRACE_S
    for sha in (orphan, kept):
        path = blobs.root / sha[:2] / sha
        os.utime(path, (old, old))
    assert lifecycle.sweep(dry_run=True).deleted == [orphan] and blobs.exists(orphan)
    report = lifecycle.sweep()
    assert report.deleted == [orphan] and not blobs.exists(orphan)
    assert blobs.exists(kept)  # referenced: never collected, however old


def test_the_cli_reports_and_sweeps_orphans(tmp_path):
    from tests.test_cli import run_cli

    env = {"PEFTSERVE_DATA_DIR": str(tmp_path / "data"), "PEFTSERVE_BLOB_GRACE_S": str(GRACE_S)}
    blobs = LocalBlobStore(tmp_path / "data" / "blobs")
    orphan, _ = blobs.put_stream(io.BytesIO(b"left by a crash"))
    old = time.time() - 2 * GRACE_S
    os.utime(blobs.root / orphan[:2] / orphan, (old, old))
    code, listed = run_cli("blobs", "sweep", "--dry-run", env=env)
    assert code == 0 and listed["deleted"] == [orphan] and blobs.exists(orphan)
    code, swept = run_cli("blobs", "sweep", env=env)
    assert code == 0 and swept["deleted"] == [orphan] and not blobs.exists(orphan)
