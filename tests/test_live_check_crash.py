"""The gateway killed (-9) in the middle of an upload's live check: after a restart the check
is taken over (once its lease has run out) and the adapter ends ready; nothing is lost.
The first worker is a stand-in that never answers the probe; the second run uses the real one."""

import asyncio
import json
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from tests.gateway_harness import free_port, wait_until_ready
from tests.second_gateway import SecondGateway, second_gateway
from tests.test_uploads import folder_files


def hanging_worker() -> tuple[str, uvicorn.Server, threading.Event]:
    """Loads adapters, then never answers a completion: the live check hangs on its probe."""
    app = FastAPI()
    probing = threading.Event()

    @app.get("/health")
    @app.get("/ready")
    async def health():
        return {}

    @app.get("/v1/models")
    async def models():
        return {"data": []}

    @app.post("/v1/load_lora_adapter")
    async def load():
        return "ok"

    @app.post("/v1/completions")
    async def complete():
        probing.set()
        await asyncio.sleep(600)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    assert wait_until_ready(url, 30)
    return url, server, probing


def test_another_gateway_finishes_the_check_of_one_killed_mid_check(gateway, tiny_base_dir, lora_factory,
                                                                    tmp_path):
    """Two gateways on one registry and blob store (PostgreSQL under PEFTSERVE_TEST_DATABASE):
    A dies mid-check; B, running all along, takes the check over once its lease ran out."""
    url, fake, probing = hanging_worker()
    a = second_gateway(gateway, tiny_base_dir, tmp_path / "a", worker_url=url)
    port = free_port()
    b = SecondGateway({**a.env, "PEFTSERVE_DATA_DIR": str(tmp_path / "b"), "PEFTSERVE_PORT": str(port),
                       "PEFTSERVE_BLOB_DIR": str(tmp_path / "a" / "blobs"), "PEFTSERVE_LIVE_CHECK_LEASE_S": "2",
                       "PEFTSERVE_RECONCILE_INTERVAL_S": "1",
                       "PEFTSERVE_WORKER_URLS": json.dumps({"tiny@1": gateway.worker()["url"]})},
                      f"http://127.0.0.1:{port}", tmp_path / "b")
    b.start()
    try:
        key = a.tenant_key("crash-co")
        headers = {"Authorization": f"Bearer {key}"}
        thread = threading.Thread(target=lambda: _upload(a.url, headers, lora_factory(96)))
        thread.start()
        assert probing.wait(60), "the live check never probed"
        a.kill()
        thread.join(30)
        with httpx.Client(base_url=b.url, headers=headers, timeout=30) as c:
            _wait_ready(c, "survivor")
    finally:
        b.stop()
        fake.should_exit = True


def _upload(url: str, headers: dict, folder) -> None:
    try:
        httpx.post(f"{url}/v1/adapters", data={"name": "survivor"}, headers=headers, timeout=120,
                   files=[("file", f) for f in folder_files(folder)])
    except httpx.HTTPError:
        pass  # the gateway dies under it


def _wait_ready(c: httpx.Client, name: str) -> None:
    deadline = time.monotonic() + 90
    while (version := c.get(f"/v1/adapters/{name}").json()["versions"][0])["status"] != "ready":
        assert version["status"] in ("received", "validating"), version
        assert time.monotonic() < deadline, version
        time.sleep(0.3)
    assert c.post("/v1/completions", json={"model": name, "prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_a_gateway_killed_mid_check_finishes_it_after_restart(gateway, tiny_base_dir, lora_factory, tmp_path):
    url, fake, probing = hanging_worker()
    server = second_gateway(gateway, tiny_base_dir, tmp_path / "check-crash", worker_url=url)
    try:
        key = server.tenant_key("crash-co")
        headers = {"Authorization": f"Bearer {key}"}

        def upload():
            try:
                httpx.post(f"{server.url}/v1/adapters", data={"name": "survivor"}, headers=headers, timeout=120,
                           files=[("file", f) for f in folder_files(lora_factory(95))])
            except httpx.HTTPError:
                pass  # the gateway dies under it

        thread = threading.Thread(target=upload)
        thread.start()
        assert probing.wait(60), "the live check never probed"
        server.kill()
        thread.join(30)

        server.env["PEFTSERVE_WORKER_URLS"] = json.dumps({"tiny@1": gateway.worker()["url"]})
        server.env["PEFTSERVE_LIVE_CHECK_LEASE_S"] = "2"
        server.start()
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            deadline = time.monotonic() + 90
            while (version := c.get("/v1/adapters/survivor").json()["versions"][0])["status"] != "ready":
                assert version["status"] in ("received", "validating"), version
                assert time.monotonic() < deadline, version
                time.sleep(0.3)
            assert c.post("/v1/completions", json={"model": "survivor", "prompt": "Hi",
                                                   "max_tokens": 2}).status_code == 200
    finally:
        server.stop()
        fake.should_exit = True
