"""Hostile request bodies and routes get 4xx answers in OpenAI's error shape, never a 500, and the
connection stays usable (issue: hostile clients, items 3 and 4)."""

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from tests.gateway_harness import ADMIN_KEY, gateway_settings

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

BAD_NUMBERS = [('{"max_tokens": 1e400}', "max_tokens"), ('{"temperature": NaN}', "temperature"),
               ('{"top_p": Infinity}', "top_p"), ('{"presence_penalty": -Infinity}', "presence_penalty"),
               ('{"logit_bias": {"5": NaN}}', "logit_bias.5")]


def raw_post(client, path: str, body: str):
    return client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def assert_openai_error(resp, status: int):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("extra,param", BAD_NUMBERS, ids=[p for _, p in BAD_NUMBERS])
def test_non_finite_numbers_are_400_naming_the_field(gateway, extra, param):
    with gateway.client(gateway.tenant_key("hostile")) as c:
        body = '{"model": "tiny", "prompt": "hi", ' + extra[1:]
        assert assert_openai_error(raw_post(c, "/v1/completions", body), 400)["param"] == param
        # the same kept-alive connection still serves the next request
        ok = c.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 1})
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", '{"model": "tiny", "prompt": "a\\ud800b", "max_tokens": 1}'),
    ("/v1/completions", '{"model": "tiny", "prompt": ["ok", "\\udfff"], "max_tokens": 1}'),
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "\\ud800": 1}'),
], ids=["prompt", "prompt-list", "chat-content", "field-name"])
def test_lone_surrogates_are_400(gateway, path, body):
    with gateway.client(gateway.tenant_key("hostile")) as c:
        assert_openai_error(raw_post(c, path, body), 400)


def test_deep_nesting_and_broken_json_are_400_in_openai_shape(gateway):
    with gateway.client(gateway.tenant_key("hostile")) as c:
        deep = '{"model": "tiny", "prompt": "x", "stop": ' + "[" * 5000 + "]" * 5000 + "}"
        assert_openai_error(raw_post(c, "/v1/completions", deep), 400)
        shallow_but_deep = '{"model": "tiny", "prompt": "x", "logit_bias": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}"
        assert_openai_error(raw_post(c, "/v1/completions", shallow_but_deep), 400)
        assert_openai_error(raw_post(c, "/v1/completions", '{"model": "tiny", "prompt": '), 400)


def test_unknown_routes_and_methods_answer_in_openai_shape(gateway):
    with gateway.client(gateway.tenant_key("hostile")) as c:
        assert assert_openai_error(c.get("/v1/no-such-route"), 404)["code"] == "not_found"
        assert assert_openai_error(c.delete("/v1/completions"), 405)["code"] == "method_not_allowed"


def test_unhandled_errors_are_500_in_openai_shape_and_counted(tmp_path):
    app = create_app(gateway_settings(tmp_path, database_url=None))

    @app.get("/test-boom")
    async def boom():
        raise RuntimeError("a bug")

    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no workers
    resp = client.get("/test-boom")
    assert resp.status_code == 500
    assert resp.json()["error"] == {"message": "internal server error", "type": "server_error", "param": None,
                                    "code": "internal_error"}
    assert "a bug" not in resp.text
    assert 'peftserve_internal_errors_total{method="GET"} 1.0' in client.get("/metrics", headers=ADMIN).text


@pytest.mark.parametrize("body,param", [
    ({"method": {"type": "supervised", "supervised": "x"}}, "method.supervised"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": [1]}}}, "method.supervised"),
    ({"hyperparameters": [1, 2]}, "hyperparameters"),
    ({"hyperparameters": {"seed": 2**70}}, "hyperparameters.seed"),
    ({"seed": -1}, "hyperparameters.seed"),
    ({"hyperparameters": {"target_modules": ["lm_head"]}}, "hyperparameters.target_modules"),
    ({"hyperparameters": {"target_modules": ["../../x"]}}, "hyperparameters.target_modules"),
    ({"model": "tiny@\u00b2"}, "model"),
    ({"hyperparameters": {"max_steps": 10**9}}, "hyperparameters"),
    ({"hyperparameters": {"max_steps": 1000, "batch_size": 512, "max_seq_len": 10**6}}, "hyperparameters"),
], ids=["supervised-str", "nested-list", "hyperparameters-list", "huge-seed", "negative-seed", "lm_head",
        "path-target", "non-ascii-version", "huge-max-steps", "huge-work"])
def test_bad_fine_tuning_requests_are_400_before_a_job_exists(gateway, body, param):
    with gateway.client(gateway.tenant_key("hostile-ft")) as c:
        resp = c.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": "file-none", **body})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param
        assert c.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_unauthenticated_requests_are_refused_before_the_body_is_read(gateway):
    """A body that never finishes: the 401 can only come from the headers."""
    import socket

    for path, content_type in (("/v1/completions", "application/json"),
                               ("/v1/adapters", "multipart/form-data; boundary=x"),
                               ("/admin/tenants", "application/json")):
        for auth in ("", "Authorization: Bearer psk-wrong\r\n"):
            with socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=10) as s:
                s.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{auth}"
                           f"Content-Length: {64 * 1024 * 1024}\r\n\r\n").encode() + b"{" * 1000)
                head = s.recv(65536).decode(errors="replace")
            assert head.startswith("HTTP/1.1 401"), (path, auth[:40], head[:200])
            assert '"authentication_error"' in head


def test_wrong_keys_on_admin_routes_are_401(gateway):
    tenant_key = gateway.tenant_key("hostile")
    for key in (None, "psa-wrong", tenant_key):
        with gateway.client(key) as c:
            resp = c.get("/admin/tenants")
            assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("enabled", [False, True])
def test_api_docs_are_off_unless_enabled(tmp_path, enabled):
    client = TestClient(create_app(gateway_settings(tmp_path, database_url=None, api_docs=enabled)))
    for path in ("/docs", "/redoc", "/openapi.json"):
        resp = client.get(path)
        assert resp.status_code == (200 if enabled else 404), (path, resp.status_code)
        if not enabled:
            assert resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("config", [b'{"r": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"r": NaN}'],
                         ids=["nested 5000 deep", "NaN rank"])
def test_hostile_adapter_configs_are_4xx(gateway, lora_factory, config):
    weights = (lora_factory(11) / "adapter_model.safetensors").read_bytes()
    gateway.tenant_key("hostile-upload")
    with gateway.admin() as admin:
        files = [("file", ("adapter_config.json", config)), ("file", ("adapter_model.safetensors", weights))]
        resp = admin.post("/admin/tenants/hostile-upload/adapters", data={"name": "deep"}, files=files)
    assert resp.status_code in (400, 422), resp.text
    assert resp.json()["error"]["param"] == "adapter_config.json"
