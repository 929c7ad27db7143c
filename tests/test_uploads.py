"""Adapter upload over HTTP (/v1/adapters): untrusted files, archives, versions, deletion,
quotas and tenant isolation, against the real gateway and vLLM worker."""

import http.client
import json
import threading
import time

import httpx
import openai
import pytest

from tests.adapter_archives import bad_archives, good_tar_gz, good_zip
from tests.malformed_adapters import cases
from tests.test_serving import complete, direct_text

FILES = ("adapter_config.json", "adapter_model.safetensors")


def upload(gateway, key, name, files: list[tuple[str, bytes]], **form) -> httpx.Response:
    with gateway.client(key) as c:
        return c.post("/v1/adapters", data={"name": name, **form}, files=[("file", f) for f in files], )


def folder_files(folder) -> list[tuple[str, bytes]]:
    return [(n, (folder / n).read_bytes()) for n in FILES]


def stored_blobs(gateway) -> set[str]:
    return {p.name for p in gateway.settings.blob_dir.rglob("*") if p.is_file()}


def test_malformed_uploads_are_refused_and_store_nothing(gateway, lora_factory):
    key = gateway.tenant_key("uploader-bad")
    folder = lora_factory(41)
    table = [(c.id, [("adapter_config.json", c.config), (c.weights_name, c.weights)], c.status, c.code)
             for c in cases(folder)]
    table += [(case_id, [(filename, data)], status, code)
              for case_id, filename, data, status, code in bad_archives(folder, gateway.settings.max_upload_bytes)]
    table += [
        ("weights_not_safetensors", [("adapter_config.json", b"{}"), ("weights.txt", b"abc")], 415,
         "unsupported_media_type"),
        ("weights_too_large", [("adapter_config.json", b"{}"),
                               ("adapter_model.safetensors", b"\0" * (gateway.settings.max_upload_bytes + 1))],
         413, "payload_too_large"),
        ("config_missing", [("adapter_model.safetensors", b"abc")], 400, "invalid_request"),
    ]
    assert len(table) >= 35
    before = stored_blobs(gateway)
    for case_id, files, status, code in table:
        resp = upload(gateway, key, "bad", files)
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), (case_id, resp.text[:500])
    with gateway.client(key) as c:
        not_multipart = c.post("/v1/adapters", json={"name": "bad"})
        assert not_multipart.status_code == 415
        assert c.get("/v1/adapters").json()["data"] == []
    assert stored_blobs(gateway) == before
    assert not any((gateway.settings.data_dir / "uploads").iterdir())
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "zip"])
def test_uploaded_adapter_is_ready_and_served_like_the_worker(gateway, lora_factory, kind):
    folder = {"folder": lora_factory(51), "tar.gz": lora_factory(52, rank=4, targets="qv"),
              "zip": lora_factory(50, rank=16, targets="all")}[kind]
    files = {"folder": folder_files(folder), "tar.gz": [("adapter.tar.gz", good_tar_gz(folder))],
             "zip": [("adapter.zip", good_zip(folder))]}[kind]
    key = gateway.tenant_key("uploader")
    resp = upload(gateway, key, f"up-{kind.replace('.', '')}", files, trained_with="lora", description=kind)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "ready" and body["trained_with"] == "lora" and body["description"] == kind
    served = complete(gateway, key, body["name"])
    assert served.status_code == 200
    assert served.json()["choices"][0]["text"] == direct_text(gateway, folder)


def test_every_adapter_carries_its_screening_signals(gateway, lora_factory):
    """Recorded at registration (uploads and fine-tuning alike) and shown on the adapter: each
    module's dW = scaling * B A, checked against the full matrices computed here."""
    import torch
    from safetensors.torch import load_file

    folder = lora_factory(53, rank=4, targets="qv", rslora=True)
    key = gateway.tenant_key("screened")
    resp = upload(gateway, key, "screened", folder_files(folder), trained_with="lora")
    assert resp.status_code == 201, resp.text
    with gateway.client(key) as c:
        signals = c.get("/v1/adapters/screened").json()["versions"][0]["screening"]["weights"]
    config = json.loads((folder / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"] ** 0.5  # rsLoRA
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    norms, concentrations = {}, []
    for k, a in tensors.items():
        if k.endswith("lora_A.weight"):
            s = torch.linalg.svdvals(scaling * tensors[k.replace("lora_A", "lora_B")].double() @ a.double())
            norms[k.removeprefix("base_model.model.").removesuffix(".lora_A.weight")] = float(s.norm())
            concentrations.append(float(s[0] ** 2 / (s ** 2).sum()))
    assert signals["modules"] == len(norms) == 4  # q and v in each of the 2 layers
    assert signals["max_norm"] == pytest.approx(max(norms.values()), rel=1e-6)
    assert signals["largest_module"] == max(norms, key=norms.get)
    assert signals["max_concentration"] == pytest.approx(max(concentrations), rel=1e-6)


def test_versions_eval_set_and_delete(gateway, lora_factory):
    key = gateway.tenant_key("versioner")
    v1_folder, v2_folder = lora_factory(61), lora_factory(62)
    eval_set = b'{"prompt": "2+2=", "expected": "4"}\n{"messages": [{"role": "user", "content": "hi"}], "expected": "hello"}\n'
    with gateway.client(key) as c:
        r1 = c.post("/v1/adapters", data={"name": "helper", "eval_scoring": "contains"},
                    files=[("file", f) for f in folder_files(v1_folder)] + [("eval_set", ("eval.jsonl", eval_set))])
        assert r1.status_code == 201, r1.text
        assert (r1.json()["version"], r1.json()["eval_items"], r1.json()["eval_scoring"]) == (1, 2, "contains")
        bad_eval = c.post("/v1/adapters", data={"name": "helper"},
                          files=[("file", f) for f in folder_files(v1_folder)]
                          + [("eval_set", ("eval.jsonl", b'{"prompt": "x", "expected": "y"}\n{"prompt": 3}\n'))])
        assert bad_eval.status_code == 422 and "line 2" in bad_eval.json()["error"]["message"]
    assert upload(gateway, key, "helper", folder_files(v2_folder)).json()["version"] == 2

    text_v1, text_v2 = direct_text(gateway, v1_folder), direct_text(gateway, v2_folder)
    assert complete(gateway, key, "helper").json()["choices"][0]["text"] == text_v2
    assert complete(gateway, key, "helper@1").json()["choices"][0]["text"] == text_v1
    with gateway.client(key) as c:
        shown = c.get("/v1/adapters/helper").json()
        assert [v["version"] for v in shown["versions"]] == [1, 2]
        assert all(v["status"] == "ready" and len(v["sha256"]) == 64 for v in shown["versions"])
        assert c.get("/v1/adapters/helper@2").json()["versions"][0]["version"] == 2

        # A request in flight on v1 finishes on v1 while v1 is deleted.
        started, results = threading.Event(), {}

        def long_request():
            body = {"model": "helper@1", "prompt": "Once", "max_tokens": 64, "temperature": 0, "stream": True}
            with gateway.client(key) as stream_client, stream_client.stream("POST", "/v1/completions",
                                                                             json=body) as resp:
                lines = []
                for line in resp.iter_lines():
                    started.set()
                    lines.append(line)
                results["status"], results["lines"] = resp.status_code, lines

        thread = threading.Thread(target=long_request)
        thread.start()
        assert started.wait(60)
        deleted = c.delete("/v1/adapters/helper@1")
        thread.join()
        assert deleted.json() == {"id": "helper@1", "object": "adapter", "deleted": True, "versions": [1]}
        assert results["status"] == 200 and "data: [DONE]" in results["lines"]
        assert not any('"error"' in line for line in results["lines"])
        assert complete(gateway, key, "helper@1").status_code == 404
        assert complete(gateway, key, "helper").status_code == 200

        v2_sha = shown["versions"][1]["sha256"]
        assert c.delete("/v1/adapters/helper").json()["versions"] == [2]
        assert c.get("/v1/adapters/helper").status_code == 404
        assert c.delete("/v1/adapters/helper").status_code == 404
    deadline = time.monotonic() + 60  # storage is released in the background, after requests in flight
    while v2_sha in stored_blobs(gateway):
        assert time.monotonic() < deadline, "the deleted adapter's blobs were never released"
        time.sleep(0.1)


def test_identical_uploads_are_stored_once(gateway, lora_factory):
    key = gateway.tenant_key("dedup")
    folder = lora_factory(71)
    first = upload(gateway, key, "one", folder_files(folder)).json()
    before = stored_blobs(gateway)
    second = upload(gateway, key, "two", folder_files(folder)).json()
    assert first["sha256"] == second["sha256"] and stored_blobs(gateway) == before


def test_tenant_isolation_on_every_adapter_endpoint(gateway, lora_factory):
    owner, other = gateway.tenant_key("owner-co"), gateway.tenant_key("other-co")
    assert upload(gateway, owner, "secret", folder_files(lora_factory(72))).status_code == 201
    with gateway.client(other) as c:
        assert "secret" not in [a["name"] for a in c.get("/v1/adapters").json()["data"]]
        for method, path in [("GET", "/v1/adapters/secret"), ("GET", "/v1/adapters/secret@1"),
                             ("DELETE", "/v1/adapters/secret"), ("DELETE", "/v1/adapters/secret@1")]:
            resp = c.request(method, path)
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "adapter_not_found", (method, path)
    # the other tenant re-using the name gets its own adapter, not a new version of the owner's
    assert upload(gateway, other, "secret", folder_files(lora_factory(73))).json()["version"] == 1
    with gateway.client(owner) as c:
        assert c.get("/v1/adapters/secret").json()["versions"][0]["sha256"] != \
            gateway.client(other).get("/v1/adapters/secret").json()["versions"][0]["sha256"]
    with gateway.client(None) as c:
        assert c.get("/v1/adapters").status_code == 401
        assert c.post("/v1/adapters", data={"name": "x"}, files=[("file", ("a.zip", b"x"))]).status_code == 401


def test_adapter_count_quota(gateway, lora_factory):
    key = gateway.tenant_key("quota-co")
    files = folder_files(lora_factory(74))
    limit = gateway.settings.tenant_max_adapters
    for i in range(limit):
        assert upload(gateway, key, f"q{i}", files).status_code == 201
    over = upload(gateway, key, "one-too-many", files)
    assert over.status_code == 429 and over.json()["error"]["code"] == "adapter_count_quota"
    assert over.json()["error"]["type"] == "insufficient_quota" and over.headers["x-should-retry"] == "false"
    # The official client retries a 429 by default; a full quota is not a rate, so it must not.
    sent = []
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=2,
                           http_client=httpx.Client(event_hooks={"request": [sent.append]}))
    with pytest.raises(openai.RateLimitError) as refused:
        client.post("/adapters", cast_to=object, body={"name": "one-too-many"}, files=[("file", f) for f in files],
                    options={"headers": {"Content-Type": "multipart/form-data"}})
    assert refused.value.code == "adapter_count_quota" and len(sent) == 1
    with gateway.client(key) as c:
        assert c.delete("/v1/adapters/q0").status_code == 200
    assert upload(gateway, key, "fits-again", files).status_code == 201


def test_oversized_request_bodies_are_refused_while_arriving(gateway):
    key = gateway.tenant_key("uploader-huge")
    limit = 3 * gateway.settings.max_upload_bytes + 1024 * 1024
    # A declared size over the limit is answered before a byte of the body is read.
    conn = http.client.HTTPConnection("127.0.0.1", gateway.settings.port, timeout=30)
    conn.putrequest("POST", "/v1/adapters")
    for header, value in [("Authorization", f"Bearer {key}"), ("Content-Length", str(limit + 1)),
                          ("Content-Type", "multipart/form-data; boundary=b")]:
        conn.putheader(header, value)
    conn.endheaders()
    declared = conn.getresponse()
    assert declared.status == 413 and json.loads(declared.read())["error"]["code"] == "payload_too_large"
    conn.close()
    with gateway.client(key) as c:

        def chunks():  # no Content-Length: the body is cut off once it passes the limit
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\n"
            for _ in range(limit // (1024 * 1024) + 2):
                yield b"\0" * (1024 * 1024)

        chunked = c.post("/v1/adapters", content=chunks(),
                         headers={"content-type": "multipart/form-data; boundary=b"})
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"
    assert httpx.get(f"{gateway.url}/ready").status_code == 200
