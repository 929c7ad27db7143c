"""An adapter that passes every static check but that the worker refuses ends ``rejected`` with
the worker's reason, the upload answers 422, and its blobs are released.

The refusing worker is a stand-in (no vLLM 0.32 refusal of a statically valid adapter is
known); the gateway is a real process with its real registry and blob store."""

import threading

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.gateway_harness import free_port, wait_until_ready
from tests.second_gateway import second_gateway
from tests.test_uploads import folder_files

REFUSAL = "LoRA rank 8 is not supported by this engine build"


def refusing_worker(status: int = 400, message: str = REFUSAL) -> tuple[str, uvicorn.Server]:
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {}

    @app.post("/v1/load_lora_adapter")
    async def load():
        return JSONResponse({"error": {"message": message, "type": "Error", "code": status}}, status)

    @app.get("/ready")
    async def ready():
        return {}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    assert wait_until_ready(url, 30)
    return url, server


def test_adapter_refused_by_the_worker_is_rejected(gateway, tiny_base_dir, lora_factory, tmp_path):
    url, worker = refusing_worker()
    server = second_gateway(gateway, tiny_base_dir, tmp_path / "refusing", worker_url=url)
    try:
        key = server.tenant_key("refused-co")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            resp = c.post("/v1/adapters", data={"name": "nope"},
                          files=[("file", f) for f in folder_files(lora_factory(91))])
            assert resp.status_code == 422 and resp.json()["error"]["code"] == "live_check_failed"
            assert REFUSAL in resp.json()["error"]["message"]
            version = c.get("/v1/adapters/nope").json()["versions"][0]
            assert version["status"] == "rejected" and REFUSAL in version["status_reason"]
            assert c.post("/v1/completions", json={"model": "nope", "prompt": "x"}).status_code == 404
        assert not (server.data_dir / "blobs" / version["sha256"][:2] / version["sha256"]).exists()
    finally:
        server.stop()
        worker.should_exit = True


def test_a_worker_failing_to_load_is_not_the_adapters_fault(gateway, tiny_base_dir, lora_factory, tmp_path):
    """A 5xx (out of memory, a crash) from the worker's adapter load: the upload is accepted for a
    later check (202), the adapter stays ``received`` with the reason, its blobs are kept."""
    url, worker = refusing_worker(500, "out of memory while loading")
    server = second_gateway(gateway, tiny_base_dir, tmp_path / "failing", worker_url=url)
    try:
        key = server.tenant_key("unlucky-co")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            resp = c.post("/v1/adapters", data={"name": "fine"},
                          files=[("file", f) for f in folder_files(lora_factory(92))])
            assert resp.status_code == 202, resp.text
            version = c.get("/v1/adapters/fine").json()["versions"][0]
            assert version["status"] in ("received", "validating"), version
            assert "out of memory" in (version["status_reason"] or "") or version["status"] == "validating"
        assert (server.data_dir / "blobs" / version["sha256"][:2] / version["sha256"]).exists()
    finally:
        server.stop()
        worker.should_exit = True
