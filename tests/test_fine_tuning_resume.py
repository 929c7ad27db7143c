"""A fine-tuning job whose server is killed mid-run resumes from its checkpoint after restart
and finishes with a servable adapter (second gateway process, sharing the session's worker)."""

import json
import time
from pathlib import Path

import httpx

from tests.second_gateway import second_gateway
from tests.test_trans_peft import reverse_task


def training_processes(data_dir: Path) -> list[int]:
    """Pids of training processes (spawned by multiprocessing) of the gateway using ``data_dir``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        if b"multiprocessing" in cmdline and f"PEFTSERVE_DATA_DIR={data_dir}".encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def test_job_killed_mid_run_resumes(gateway, tiny_base_dir, tmp_path):
    server = second_gateway(gateway, tiny_base_dir, tmp_path / "ft-crash")
    data_dir = server.data_dir
    key = server.tenant_key("resumer")
    c = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    file_id = c.post("/v1/files", data={"purpose": "fine-tune"},
                     files={"file": ("t.jsonl", reverse_task(40))}).json()["id"]
    hyper = {"rank": 4, "max_steps": 150, "batch_size": 4, "checkpoint_every": 5, "learning_rate": 1e-3}
    job_id = c.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file_id, "suffix": "resumed",
                                                  "hyperparameters": hyper}).json()["id"]

    def step_events():
        events = c.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        return [e for e in events if e["data"] and "step" in e["data"]]

    deadline = time.monotonic() + 120
    while not any(e["data"]["step"] >= 10 for e in step_events()):
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.2)
    assert training_processes(data_dir), "training does not run in a process of its own"
    server.kill_gateway_only()
    deadline = time.monotonic() + 30  # the orphan would go on writing this job's checkpoints
    while training_processes(data_dir):
        assert time.monotonic() < deadline, "the training process outlived its gateway"
        time.sleep(0.2)
    checkpoint = json.loads((data_dir / "fine_tuning" / job_id / "checkpoint" / "state.json").read_text())
    assert 5 <= checkpoint["step"] < 150

    server.start()
    try:
        deadline = time.monotonic() + 180
        while (job := c.get(f"/v1/fine_tuning/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["status"] == "succeeded", job["error"]
        messages = [e["message"] for e in c.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                                                params={"limit": 1000}).json()["data"]]
        assert any("resumes from its last checkpoint" in m for m in messages)
        assert c.post("/v1/completions", json={"model": job["fine_tuned_model"], "prompt": "Hi",
                                               "max_tokens": 3}).status_code == 200
    finally:
        c.close()
        server.stop()


def test_a_checkpoint_archive_round_trips_and_refuses_hostile_members(tmp_path):
    import io
    import tarfile

    import pytest

    from adapters.training.checkpoint_archive import pack, unpack

    folder = tmp_path / "job" / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"step": 7, "schedule_start": 0}))
    (folder / "optimizer.pt").write_bytes(b"\0" * 100)
    archive = pack(folder, tmp_path / "c.tar")
    elsewhere = tmp_path / "other-machine"
    (elsewhere / "checkpoint").mkdir(parents=True)
    (elsewhere / "checkpoint" / "state.json").write_text(json.dumps({"step": 3}))  # an older one, replaced
    assert unpack(archive, elsewhere) == 7
    assert (elsewhere / "checkpoint" / "optimizer.pt").read_bytes() == b"\0" * 100

    for name in ("../escape", "sub/dir.pt", "/abs"):
        hostile = tmp_path / f"hostile-{len(name)}.tar"
        with tarfile.open(hostile, "w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
        with pytest.raises(ValueError, match="unexpected member"):
            unpack(hostile, tmp_path / "victim")
        assert not (tmp_path / "escape").exists()
    assert json.loads((elsewhere / "checkpoint" / "state.json").read_text())["step"] == 7  # untouched by failures
