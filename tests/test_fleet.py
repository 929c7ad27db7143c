"""Two gateway processes on one PostgreSQL registry and one S3-compatible blob store, in front of
two workers of one base (the session's and a standalone one), each gateway with its own data
folder as if on its own machine: state is shared through the database and the bucket only;
each adapter's requests go to its home worker whichever gateway receives them; a worker or a
gateway killed mid-traffic costs only the requests in flight on it; a background job whose
gateway is killed is taken over by the other gateway and finished exactly once."""

import itertools
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.repository import Registry
from migration.base_versions.importer import import_base
from tests.gateway_harness import ADMIN_KEY, JOB_LEASE_S, free_port
from tests.second_gateway import SecondGateway
from tests.standalone_worker import StandaloneWorker
from tests.test_trans_peft import reverse_task
from tests.test_uploads import folder_files


@pytest.fixture(scope="module")
def second_worker(gateway, tiny_base_dir, tmp_path_factory):
    worker = StandaloneWorker(gateway.settings, tiny_base_dir, tmp_path_factory.mktemp("worker2") / "worker.log")
    yield worker
    worker.kill()


@pytest.fixture(scope="module")
def fleet(gateway, second_worker, postgres, s3, tiny_base_dir, tmp_path_factory):
    url = postgres.new_database()
    root = tmp_path_factory.mktemp("fleet")
    engine = make_engine(url)
    upgrade_schema(engine)
    import_base(Registry(make_session_factory(engine)), root / "bases", name="tiny", source=tiny_base_dir)
    engine.dispose()
    common = {"PEFTSERVE_DATABASE_URL": url, **s3.gateway_env(s3.new_bucket()),
              "PEFTSERVE_ADMIN_KEY": ADMIN_KEY, "PEFTSERVE_JOB_LEASE_S": str(JOB_LEASE_S),
              "PEFTSERVE_WORKER_HEALTH_INTERVAL_S": "0.5",
              "PEFTSERVE_WORKER_URLS": json.dumps({"tiny@1": [gateway.worker()["url"], second_worker.url]})}
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
        resp = via_a.post("/v1/adapters", data={"name": "both"}, files=[("file", f) for f in folder_files(
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
            resp = c.post("/v1/adapters", data={"name": name}, files=[("file", f) for f in folder_files(
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
        resident = {w["name"]: set(w["resident_adapters"]) for w in admin.get("/admin/workers").json()}
    assert all(resident.values()) and not resident["tiny@1#0"] & resident["tiny@1#1"]  # no adapter on both


@dataclass
class Outcome:
    started: float
    ok: bool
    worker: str | None
    detail: str = ""


def wait_for(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


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


def test_a_worker_killed_mid_traffic_costs_only_its_requests_in_flight(fleet, second_worker, routed):
    gateways, _ = fleet
    stop, outcomes = threading.Event(), [[] for _ in range(4)]
    clients = [threading.Thread(target=traffic, args=(server, new_key(server, "route-co"), stop, outcomes[i]))
               for i, server in enumerate([gateways["a"], gateways["b"]] * 2)]
    for t in clients:
        t.start()
    served_by = lambda: {o.worker for out in outcomes for o in out if o.ok}  # noqa: E731
    wait_for(lambda: {"tiny@1#0", "tiny@1#1"} <= served_by())
    second_worker.kill()
    dead_at = time.monotonic()  # requests sent before this may have reached it (in flight)
    wait_for(lambda: sum(o.started > dead_at + 0.5 for out in outcomes for o in out) >= 8)
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


def test_a_job_whose_gateway_dies_is_taken_over_and_finished_once(fleet):
    gateways, db = fleet
    key = gateways["a"].tenant_key("takeover-co")
    with client(gateways["a"], key) as c:
        file_id = c.post("/v1/files", data={"purpose": "fine-tune"},
                         files={"file": ("t.jsonl", reverse_task(40))}).json()["id"]
        hyper = {"rank": 4, "max_steps": 60, "batch_size": 4, "checkpoint_every": 5, "learning_rate": 1e-3}
        job_id = c.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file_id, "suffix": "once",
                                                      "hyperparameters": hyper}).json()["id"]

    def holder() -> str | None:
        with psycopg.connect(db) as conn:
            return conn.execute("SELECT claimed_by FROM fine_tuning_jobs WHERE id = %s", (job_id,)).fetchone()[0]

    def steps(c: httpx.Client) -> list[int]:
        events = c.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        return [e["data"]["step"] for e in events if e["data"] and "step" in e["data"]]

    deadline = time.monotonic() + 120
    with client(gateways["a"], key) as c:
        while not (steps(c) and holder()):
            assert time.monotonic() < deadline, "no gateway started the job"
            time.sleep(0.2)
    # The gateway holding the job (either may have claimed it) dies; the other one takes over.
    claimant, other = sorted(gateways.values(), key=lambda g: f":{g.env['PEFTSERVE_PORT']}:" not in holder())
    first_holder = holder()
    stop, on_claimant, on_other = threading.Event(), [], []
    clients = [threading.Thread(target=traffic, args=(server, new_key(server, "route-co"), stop, out))
               for server, out in ((claimant, on_claimant), (other, on_other))]
    for t in clients:
        t.start()
    wait_for(lambda: any(o.ok for o in on_claimant) and any(o.ok for o in on_other))
    os.killpg(claimant.proc.pid, signal.SIGKILL)
    claimant.proc.wait()
    dead_at = time.monotonic()
    wait_for(lambda: sum(o.started > dead_at for o in on_other) >= 3 and on_claimant[-1].started > dead_at)
    stop.set()
    for t in clients:
        t.join(60)
    assert all(o.ok for o in on_other)  # the surviving gateway never noticed
    assert not on_claimant[-1].ok  # the dead one: connection errors
    with client(other, key) as c:
        deadline = time.monotonic() + 240
        while (job := c.get(f"/v1/fine_tuning/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["status"] == "succeeded", job["error"]
        assert holder() is None or holder() != first_holder
        messages = [e["message"] for e in c.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                                                params={"limit": 1000}).json()["data"]]
        assert sum("The gateway running this job stopped" in m for m in messages) == 1
        assert sum(m.startswith("New fine-tuned model created") for m in messages) == 1
        versions = c.get(f"/v1/adapters/{job['fine_tuned_model']}").json()["versions"]
        assert [v["version"] for v in versions] == [1] and versions[0]["status"] == "ready"
        assert c.post("/v1/completions", json={"model": job["fine_tuned_model"], "prompt": "Hi",
                                               "max_tokens": 2}).status_code == 200
