"""Killing the server in the middle of an upload leaves no half-stored adapter; restart is clean."""

import http.client
import time

import httpx

from tests.second_gateway import second_gateway


def test_kill_during_upload_leaves_nothing(gateway, tiny_base_dir, lora_factory, tmp_path):
    server = second_gateway(gateway, tiny_base_dir, tmp_path / "crash-data")
    data_dir, url = server.data_dir, server.url
    port = int(url.rsplit(":", 1)[1])
    key = server.tenant_key("crashy")

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
    server.kill()
    conn.close()

    server.start()
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
        server.stop()
