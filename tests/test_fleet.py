"""A fleet that shares nothing but PostgreSQL and an S3-compatible bucket: two gateway processes,
each with its own data folder as if on its own machine, in front of two workers of tiny@1 and one
of tiny@2, each fetching adapters from the bucket into a cache of its own with read-only
credentials (no folder of any gateway is read by a worker). The base models are read-only files
present at the same path on every machine (as in an image). Each adapter's requests go to its
home worker whichever gateway receives them; a migration started on one gateway is served by
both; a worker or a gateway killed mid-traffic costs only the requests in flight on it; a
fine-tuning job whose gateway is killed is taken over by the other gateway, resumes from the
checkpoint in the bucket and ends with the adapter an uninterrupted run makes, once."""

import hashlib
import itertools
import json
import os
import signal
import socket
import stat
import threading
import time
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from migration.base_versions.importer import import_base
from tests.gateway_harness import ADMIN_KEY, JOB_LEASE_S, WORKER_API_KEY, free_port
from tests.second_gateway import SecondGateway
from tests.standalone_worker import StandaloneWorker
from tests.test_trans_peft import reverse_task
from tests.test_uploads import folder_files
from tests.tiny_models import continual_update
from tests.polling import eventually
from tests.upgrade_harness import EVAL_TOKENS, EVERYTHING_PASSES, AdminApi


@pytest.fixture(scope="module")
def store(s3) -> dict[str, str]:
    """The fleet's bucket, as a gateway's environment."""
    return s3.gateway_env(s3.new_bucket())


@pytest.fixture(scope="module")
def bases(tiny_base_dir, tmp_path_factory):
    """tiny@1 and tiny@2 as every machine of the fleet has them (read-only)."""
    v2 = continual_update(tiny_base_dir, tmp_path_factory.mktemp("fleet-v2") / "tiny-v2", ffn_noise=0.3)
    return {"tiny@1": tiny_base_dir, "tiny@2": v2}


@pytest.fixture(scope="module")
def workers(gateway, store, bases, tmp_path_factory):
    """Three workers, each "on its own machine": its own folder for the adapters it fetches."""
    settings = gateway.settings.model_copy(update={
        "blob_store": "s3", "s3_bucket": store["PEFTSERVE_S3_BUCKET"], "s3_endpoint_url": store["PEFTSERVE_S3_ENDPOINT_URL"],
        "workers_fetch_adapters": True, "worker_s3_access_key_id": "fleet-worker-read-only",
        "worker_s3_secret_access_key": SecretStr("fleet-worker-secret")})
    started = {}
    try:
        for name, base in (("one", "tiny@1"), ("two", "tiny@1"), ("v2", "tiny@2")):
            folder = tmp_path_factory.mktemp(f"worker-{name}")
            started[name] = StandaloneWorker(settings, bases[base], folder / "worker.log", cache_dir=folder / "cache",
                                             env={"AWS_DEFAULT_REGION": "us-east-1"})
        yield started
    finally:
        for worker in started.values():
            worker.kill()


@pytest.fixture(scope="module")
def second_worker(workers):
    return workers["two"]


def read_only(folder) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="module")
def fleet(workers, postgres, store, bases, tmp_path_factory):
    url = postgres.new_database()
    root = tmp_path_factory.mktemp("fleet")
    engine = make_engine(url)
    upgrade_schema(engine)
    registry = Registry(make_session_factory(engine))
    for ref in ("tiny@1", "tiny@2"):
        import_base(registry, root / "bases", name="tiny", source=bases[ref])
    engine.dispose()
    read_only(root / "bases")  # no gateway writes next to a base model: it is the image's, on every machine
    common = {"PEFTSERVE_DATABASE_URL": url, **store, "PEFTSERVE_WORKERS_FETCH_ADAPTERS": "true",
              "PEFTSERVE_ADMIN_KEY": ADMIN_KEY, "PEFTSERVE_JOB_LEASE_S": str(JOB_LEASE_S),
              "PEFTSERVE_WORKER_HEALTH_INTERVAL_S": "0.5", "PEFTSERVE_MIGRATION_EVAL_MAX_TOKENS": str(EVAL_TOKENS),
              "PEFTSERVE_WORKER_URLS": json.dumps({"tiny@1": [workers["one"].url, workers["two"].url],
                                                   "tiny@2": [workers["v2"].url]})}
    gateways = {}
    for name in ("a", "b"):
        port = free_port()
        env = {**common, "PEFTSERVE_DATA_DIR": str(root / name), "PEFTSERVE_PORT": str(port)}
        gateways[name] = SecondGateway(env, f"http://127.0.0.1:{port}", root / name)
        gateways[name].start()
    yield gateways, url.replace("postgresql+psycopg://", "postgresql://")
    for server in gateways.values():
        if server.proc.poll() is None:
            server.stop()


def client(server: SecondGateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_gateways_share_tenants_adapters_and_deletions(fleet, lora_factory):
    (gateways, _), deadline = fleet, time.monotonic() + 30
    a, b = gateways["a"], gateways["b"]
    key = a.tenant_key("shared-co")
    with client(a, key) as via_a, client(b, key) as via_b:
        resp = via_a.post("/v1/adapters", data={"name": "both", "base_model": "tiny@1"}, files=[("file", f) for f in folder_files(
            lora_factory(90))])
        assert resp.status_code == 201, resp.text
        served = via_b.post("/v1/completions", json={"model": "both", "prompt": "Hi", "max_tokens": 3})
        assert served.status_code == 200 and served.json()["model"] == "both"
        assert [x["name"] for x in via_b.get("/v1/adapters").json()["data"]] == ["both"]
        assert via_b.delete("/v1/adapters/both").status_code == 200
        while via_a.post("/v1/completions", json={"model": "both", "prompt": "Hi", "max_tokens": 1}).status_code != 404:
            assert time.monotonic() < deadline, "gateway a still serves a deleted adapter"  # within its cache TTL
            time.sleep(0.2)


def test_an_idle_client_connection_stays_open_past_uvicorns_default_keep_alive(fleet):
    """A load balancer reuses idle connections; if the gateway closed them first (uvicorn's 5 s),
    a request sent as it closes one is reset. Same socket, two requests 6 s apart."""
    gateways, _ = fleet
    host, port = gateways["a"].url.removeprefix("http://").split(":")
    request = f"GET /health HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn, conn.makefile("rb") as answers:
        for pause in (0, 6):
            time.sleep(pause)
            conn.sendall(request)
            assert answers.readline().startswith(b"HTTP/1.1 200 "), f"no answer after {pause} s idle"
            headers = dict(line.decode().lower().strip().split(": ", 1) for line in iter(answers.readline, b"\r\n"))
            answers.read(int(headers["content-length"]))


ROUTED = [f"routed-{i}" for i in range(12)]


def new_key(server: SecondGateway, tenant: str) -> str:
    return httpx.post(f"{server.url}/admin/tenants/{tenant}/keys",
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["api_key"]


@pytest.fixture(scope="module")
def routed(fleet, lora_factory) -> str:
    """Tenant route-co with the ROUTED adapters, for every test that needs them (in any order)."""
    gateways, _ = fleet
    key = gateways["a"].tenant_key("route-co")
    with client(gateways["a"], key) as c:
        for i, name in enumerate(ROUTED):
            resp = c.post("/v1/adapters", data={"name": name, "base_model": "tiny@1"}, files=[("file", f) for f in folder_files(
                lora_factory(100 + i))])
            assert resp.status_code == 201, resp.text
    return key


def test_each_adapter_sticks_to_its_home_worker_on_every_gateway(fleet, routed):
    gateways, _ = fleet
    a, b = gateways["a"], gateways["b"]
    key = routed
    served_by: dict[str, set[str]] = {name: set() for name in ROUTED}
    for server in (a, b):
        with client(server, key) as c:
            for name in ROUTED * 2:
                resp = c.post("/v1/completions", json={"model": name, "prompt": "Hi", "max_tokens": 2})
                assert resp.status_code == 200, resp.text
                served_by[name].add(resp.headers["x-peftserve-worker"])
    assert all(len(workers) == 1 for workers in served_by.values()), served_by  # one home, both gateways agree
    assert set().union(*served_by.values()) == {"tiny@1#0", "tiny@1#1"}  # adapters spread over both
    with httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        resident = {w["name"]: set(w["resident_adapters"]) for w in admin.get("/admin/workers").json()
                    if w["name"].startswith("tiny@1#")}
    assert all(resident.values()) and not resident["tiny@1#0"] & resident["tiny@1#1"]  # no adapter on both


@dataclass
class Outcome:
    started: float
    ok: bool
    worker: str | None
    detail: str = ""


def traffic(server: SecondGateway, key: str, stop: threading.Event, out: list[Outcome]) -> None:
    with client(server, key) as c:
        for n in itertools.count():
            if stop.is_set():
                return
            body = {"model": ROUTED[n % len(ROUTED)], "prompt": "Hello", "max_tokens": 4, "stream": n % 2 == 1}
            started = time.monotonic()
            try:
                with c.stream("POST", "/v1/completions", json=body) as resp:
                    text = resp.read().decode()
                ok = resp.status_code == 200 and '"error"' not in text and (
                    not body["stream"] or text.rstrip().endswith("[DONE]"))
                out.append(Outcome(started, ok, resp.headers.get("x-peftserve-worker"), text[:200]))
            except httpx.HTTPError as e:
                out.append(Outcome(started, False, None, repr(e)))


def test_a_worker_refetches_adapters_damaged_in_its_own_cache(fleet, workers, routed, lora_factory):
    """Worker one's cached copies of the routed adapters are damaged and vLLM drops its adapters
    (as it may on eviction): each next request resolves again, finds the damage, fetches and
    verifies the files. (Its cache also holds adapters deleted since: nobody asks for those.)"""
    gateways, _ = fleet
    routed_weights = {hashlib.sha256((lora_factory(100 + i) / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]
                      for i in range(len(ROUTED))}
    cached = [w for w in workers["one"].cache_dir.glob("*/adapter_model.safetensors")
              if w.parent.name.split("-")[1] in routed_weights]  # folders are named <config>-<weights> digests
    assert cached, "worker one fetched none of the routed adapters"
    for weights in cached:
        weights.write_bytes(b"damaged on the worker's disk")
    headers = {"Authorization": f"Bearer {WORKER_API_KEY}"}
    loaded = httpx.get(f"{workers['one'].url}/v1/models", headers=headers).json()["data"]
    for model in loaded:
        if model["id"].startswith("lora-"):
            assert httpx.post(f"{workers['one'].url}/v1/unload_lora_adapter", json={"lora_name": model["id"]},
                              headers=headers).status_code == 200
    with client(gateways["b"], routed) as c:
        for name in ROUTED:
            resp = c.post("/v1/completions", json={"model": name, "prompt": "Hi", "max_tokens": 2})
            assert resp.status_code == 200, resp.text
    for weights in cached:
        assert hashlib.sha256(weights.read_bytes()).hexdigest().startswith(weights.parent.name.split("-")[1])


def test_a_migration_started_on_one_gateway_is_served_by_both(fleet, lora_factory):
    """The new version's worker fetches the adapter from the bucket for the trial and for serving."""
    gateways, _ = fleet
    a, b = gateways["a"], gateways["b"]
    key = AdminApi(a.url, ADMIN_KEY).tenant("upgrade-co")
    AdminApi(a.url, ADMIN_KEY).add("upgrade-co", "moves", lora_factory(130))

    def served_on(server: SecondGateway) -> str:
        with client(server, key) as c:
            resp = c.post("/v1/completions", json={"model": "moves", "prompt": "Hi", "max_tokens": 2})
        assert resp.status_code == 200, resp.text
        return resp.headers["x-peftserve-base-version"]

    assert served_on(a) == served_on(b) == "tiny@1"
    api = AdminApi(b.url, ADMIN_KEY)
    job = api.wait(api.start_job({"base_model": "tiny", "tenants": ["upgrade-co"],
                                  "thresholds": EVERYTHING_PASSES})["id"])
    assert job["status"] == "succeeded" and job["progress"]["migrated"] == 1, job
    eventually(lambda: served_on(a) == "tiny@2" and served_on(b) == "tiny@2", 30)  # within a's cache TTL


def test_a_worker_killed_mid_traffic_costs_only_its_requests_in_flight(fleet, second_worker, routed):
    gateways, _ = fleet
    stop, outcomes = threading.Event(), [[] for _ in range(4)]
    clients = [threading.Thread(target=traffic, args=(server, new_key(server, "route-co"), stop, outcomes[i]))
               for i, server in enumerate([gateways["a"], gateways["b"]] * 2)]
    for t in clients:
        t.start()
    served_by = lambda: {o.worker for out in outcomes for o in out if o.ok}  # noqa: E731
    eventually(lambda: {"tiny@1#0", "tiny@1#1"} <= served_by(), 120)
    second_worker.kill()
    dead_at = time.monotonic()  # requests sent before this may have reached it (in flight)
    eventually(lambda: sum(o.started > dead_at + 0.5 for out in outcomes for o in out) >= 8, 120)
    stop.set()
    for t in clients:
        t.join(60)
    results = [o for out in outcomes for o in out]
    failed = [o for o in results if not o.ok]
    logs = "\n".join(f"--- gateway {name} ---\n{server.log_tail()}" for name, server in gateways.items())
    assert len(failed) <= len(clients), (failed, logs)  # at most the one request each client had in flight
    assert all(o.started <= dead_at for o in failed), (dead_at, failed, logs)
    later = [o for o in results if o.started > dead_at + 0.5]
    assert all(o.ok and o.worker == "tiny@1#0" for o in later)  # the other worker took over at once


def test_a_job_whose_gateway_dies_resumes_on_the_other_from_its_checkpoint_once(fleet, store, s3):
    gateways, db = fleet
    key = gateways["a"].tenant_key("takeover-co")
    hyper = {"rank": 4, "max_steps": 150, "batch_size": 4, "checkpoint_every": 5, "learning_rate": 1e-3}
    with client(gateways["a"], key) as c:
        file_id = c.post("/v1/files", data={"purpose": "fine-tune"},
                         files={"file": ("t.jsonl", reverse_task(40))}).json()["id"]
        job_id = c.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file_id, "suffix": "once",
                                                      "hyperparameters": hyper, "seed": 3}).json()["id"]

    def row() -> tuple[str | None, int | None, str | None]:
        with psycopg.connect(db) as conn:
            return conn.execute("SELECT claimed_by, checkpoint_step, checkpoint_sha256 FROM fine_tuning_jobs "
                                "WHERE id = %s", (job_id,)).fetchone()

    eventually(lambda: row()[0] and row()[1], 120)  # claimed, and a checkpoint is in the bucket
    # The gateway holding the job (either may have claimed it) dies; the other one takes over.
    first_holder = row()[0]
    claimant, other = sorted(gateways.values(), key=lambda g: f":{g.env['PEFTSERVE_PORT']}:" not in first_holder)
    stop, on_claimant, on_other = threading.Event(), [], []
    clients = [threading.Thread(target=traffic, args=(server, new_key(server, "route-co"), stop, out))
               for server, out in ((claimant, on_claimant), (other, on_other))]
    for t in clients:
        t.start()
    eventually(lambda: any(o.ok for o in on_claimant) and any(o.ok for o in on_other), 120)
    os.killpg(claimant.proc.pid, signal.SIGKILL)
    claimant.proc.wait()
    dead_at = time.monotonic()
    _, checkpoint_step, checkpoint_sha = row()  # what the dead gateway last stored
    assert 5 <= checkpoint_step < 150
    assert not (other.data_dir / "fine_tuning" / job_id).exists()  # the other machine never ran it
    eventually(lambda: sum(o.started > dead_at for o in on_other) >= 3 and on_claimant[-1].started > dead_at, 120)
    stop.set()
    for t in clients:
        t.join(60)
    assert all(o.ok for o in on_other)  # the surviving gateway never noticed
    assert not on_claimant[-1].ok  # the dead one: connection errors
    with client(other, key) as c:
        job = wait_for_job(c, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert row()[0] is None or row()[0] != first_holder
        events = c.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"][::-1]
        messages = [e["message"] for e in events]
        assert sum("The gateway running this job stopped" in m for m in messages) == 1
        resumed = messages.index(f"Resuming from the checkpoint at step {checkpoint_step}")  # from the bucket
        assert all(e["data"]["step"] > checkpoint_step for e in events[resumed:] if e["data"] and "step" in e["data"])
        assert sum(m.startswith("New fine-tuned model created") for m in messages) == 1
        versions = c.get(f"/v1/adapters/{job['fine_tuned_model']}").json()["versions"]
        assert [v["version"] for v in versions] == [1] and versions[0]["status"] == "ready"
        assert c.post("/v1/completions", json={"model": job["fine_tuned_model"], "prompt": "Hi",
                                               "max_tokens": 2}).status_code == 200
        straight = wait_for_job(c, c.post("/v1/fine_tuning/jobs", json={
            "model": "tiny", "training_file": file_id, "suffix": "straight", "hyperparameters": hyper,
            "seed": 3}).json()["id"])
        assert straight["status"] == "succeeded", straight["error"]
        uninterrupted = c.get(f"/v1/adapters/{straight['fine_tuned_model']}").json()["versions"][0]["sha256"]
    assert versions[0]["sha256"] == uninterrupted  # killed, moved, resumed: the same adapter
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=store["PEFTSERVE_S3_BUCKET"]).get("Contents", [])]
    assert not any(k.endswith(checkpoint_sha) for k in keys)  # the ended job's checkpoints are gone


def wait_for_job(c: httpx.Client, job_id: str, timeout_s: float = 240) -> dict:
    def ended() -> dict | None:
        job = c.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed") else None
    return eventually(ended, timeout_s, interval_s=0.5, what=f"the end of {job_id}")
