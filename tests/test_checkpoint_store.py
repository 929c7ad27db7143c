"""Fine-tuning checkpoints in the blob store (server/fine_tuning/checkpoints.py), on SQLite and a
real PostgreSQL server with the real local blob store: each new checkpoint replaces (and prunes)
the last, only the lease holder records one, a machine without the work folder pulls it, a
damaged one costs the time and not the job, and an ended job leaves none behind."""

import json

import pytest

from adapters.registry.blob_references import BlobReferences
from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.file_repository import FileRepository
from adapters.registry.fine_tuning_repository import FineTuningRepository
from adapters.registry.job_leases import JobLeases
from adapters.registry.models import FineTuningJob, JobStatus
from adapters.registry.registry import Registry
from adapters.storage.blob_lifecycle import BlobLifecycle
from adapters.storage.blob_store import LocalBlobStore
from adapters.training.checkpoint_archive import pack
from server.fine_tuning.checkpoints import JobCheckpoints
from tests.test_registry_databases import ARCH


@pytest.fixture()
def world(database_url, tmp_path):
    engine = make_engine(database_url)
    upgrade_schema(engine)
    sessions = make_session_factory(engine)
    registry, repo = Registry(sessions), FineTuningRepository(sessions)
    tenant, _ = registry.create_tenant("trainer")
    base = registry.add_base_version("tiny", None, path="/b", fingerprint="f", architecture=ARCH, source="s")
    training = FileRepository(sessions).add_file(tenant.id, "t.jsonl", "fine-tune", 10, "s" * 64)
    job = repo.add_job(tenant_id=tenant.id, base_version_id=base.id, model="tiny", training_file=training.id,
                       validation_file=None, suffix=None, hyperparameters={})
    leases = JobLeases(sessions, FineTuningJob, queued=JobStatus.queued, running=JobStatus.running)
    assert leases.claim(job.id, "gateway-a", 60) == ""
    blobs = LocalBlobStore(tmp_path / "blobs")
    lifecycle = BlobLifecycle(blobs, BlobReferences(sessions), grace_s=60)
    yield repo, leases, lifecycle, job.id, tmp_path
    engine.dispose()


def archive_of(folder, step: int):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(json.dumps({"step": step, "schedule_start": 0}))
    (folder / "optimizer.pt").write_bytes(bytes([step]) * 64)
    return pack(folder, folder.with_name(f"checkpoint-{step:08d}.tar"))


def test_checkpoints_replace_each_other_and_only_the_holder_records_one(world):
    repo, leases, lifecycle, job_id, tmp = world
    ours = JobCheckpoints(lifecycle, leases, repo, owner="gateway-a")
    assert ours.push(job_id, 5, archive_of(tmp / "a" / "checkpoint", 5))
    first = repo.get_job(job_id).checkpoint_sha256
    assert ours.push(job_id, 10, archive_of(tmp / "a" / "checkpoint", 10))
    second = repo.get_job(job_id)
    assert second.checkpoint_step == 10 and lifecycle.blobs.exists(second.checkpoint_sha256)
    assert not lifecycle.blobs.exists(first)  # pruned as the next one landed
    assert not list((tmp / "a").glob("*.tar"))  # the hand-over files go once stored

    stranger = JobCheckpoints(lifecycle, leases, repo, owner="gateway-b")  # lost the lease, still running
    assert not stranger.push(job_id, 15, archive_of(tmp / "b" / "checkpoint", 15))
    after = repo.get_job(job_id)
    assert (after.checkpoint_step, after.checkpoint_sha256) == (10, second.checkpoint_sha256)
    assert {p.name for p in lifecycle.blobs.root.rglob("*") if p.is_file() and len(p.name) == 64} == {
        second.checkpoint_sha256}  # the stranger's bytes did not stay either


def test_a_machine_without_the_work_folder_pulls_the_checkpoint_and_a_damaged_one_costs_only_time(world):
    repo, leases, lifecycle, job_id, tmp = world
    ours = JobCheckpoints(lifecycle, leases, repo, owner="gateway-a")
    ours.push(job_id, 10, archive_of(tmp / "a" / "checkpoint", 10))
    elsewhere = tmp / "other-machine"
    assert ours.pull(job_id, elsewhere) == 10
    assert (elsewhere / "checkpoint" / "optimizer.pt").read_bytes() == bytes([10]) * 64
    archive_of(elsewhere / "checkpoint", 12)  # its own, further along (same job): kept
    assert ours.pull(job_id, elsewhere) == 12

    sha = repo.get_job(job_id).checkpoint_sha256
    next(p for p in lifecycle.blobs.root.rglob(sha) if p.is_file()).write_bytes(b"damaged in the store")
    assert ours.pull(job_id, tmp / "third-machine") is None  # starts from the beginning, with a warning
    assert any("could not be read" in e.message and e.level == "warn" for e in repo.events(job_id))


def test_an_ended_job_leaves_no_checkpoint(world):
    repo, leases, lifecycle, job_id, tmp = world
    ours = JobCheckpoints(lifecycle, leases, repo, owner="gateway-a")
    ours.push(job_id, 10, archive_of(tmp / "a" / "checkpoint", 10))
    sha = repo.get_job(job_id).checkpoint_sha256
    ours.release_if_ended(job_id)
    assert lifecycle.blobs.exists(sha)  # still running: kept
    leases.finish(job_id, "gateway-a", status=JobStatus.failed)
    ours.release_if_ended(job_id)
    assert not lifecycle.blobs.exists(sha)
