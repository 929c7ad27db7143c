"""Killing the server in the middle of an upload leaves no half-stored adapter; restart is clean.

A second gateway process runs on its own data folder and uses the session's vLLM worker as an
external worker (no second engine to start)."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import httpx

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.repository import Registry
from migration.base_versions.importer import import_base
from tests.gateway_harness import ADMIN_KEY, free_port


def start(env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "server.cli.main", "serve"], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{env['PEFTSERVE_PORT']}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise TimeoutError("second gateway did not become ready")


def test_kill_during_upload_leaves_nothing(gateway, tiny_base_dir, lora_factory, tmp_path):
    data_dir = tmp_path / "crash-data"
    engine = make_engine(f"sqlite:///{data_dir / 'registry.db'}")
    upgrade_schema(engine)
    import_base(Registry(make_session_factory(engine)), data_dir / "bases", name="tiny", source=tiny_base_dir)
    port = free_port()
    env = {"PEFTSERVE_DATA_DIR": str(data_dir), "PEFTSERVE_PORT": str(port), "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           "PEFTSERVE_WORKER_URLS": json.dumps({"tiny@1": gateway.worker()["url"]})}
    proc = start(env)
    url = f"http://127.0.0.1:{port}"
    key = httpx.post(f"{url}/admin/tenants", json={"name": "crashy"},
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["api_key"]

    # Send headers and half of a 4 MB multipart body, then kill the server mid-upload.
    boundary = "crashboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nhalf\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"adapter_model.safetensors\""
            f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    total = len(head) + 4 * 1024 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/v1/adapters")
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(total))
    conn.endheaders()
    conn.send(head + b"\0" * (2 * 1024 * 1024))
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    conn.close()

    proc = start(env)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            assert c.get("/v1/adapters").json()["data"] == []
            assert not (data_dir / "uploads").exists() or not any((data_dir / "uploads").iterdir())
            assert not any((data_dir / "blobs" / "tmp").iterdir())
            folder = lora_factory(81)
            files = [("file", (n, (folder / n).read_bytes()))
                     for n in ("adapter_config.json", "adapter_model.safetensors")]
            resp = c.post("/v1/adapters", data={"name": "after-crash"}, files=files)
            assert resp.status_code == 201 and resp.json()["status"] == "ready", resp.text
            served = c.post("/v1/completions", json={"model": "after-crash", "prompt": "Hi", "max_tokens": 4})
            assert served.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
