"""What one tenant may ask of the shared engine, through the real gateway and its real worker:
only documented sampling parameters reach the worker, the work of one request is bounded, a
tenant's requests in flight are bounded (others unaffected), /metrics needs the admin key,
and disabling a tenant stops its fine-tuning jobs."""


import httpx
import pytest

from server.openai_api.protocol import CompletionRequest
from server.openai_api.request_limits import RequestLimits, TenantConcurrency
from adapters.errors import InvalidRequestError, RateLimitError
from tests.gateway_harness import ADMIN_KEY, free_port, gateway_settings, wait_until_http
from tests.test_trans_peft import reverse_task
from tests.polling import eventually

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def complete(c: httpx.Client, **fields) -> httpx.Response:
    return c.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 2, **fields})


@pytest.mark.parametrize("field", ["priority", "vllm_xargs", "kv_transfer_params", "request_id", "cache_salt",
                                   "prompt_embeds", "lora_request", "logits_processors", "best_of",
                                   "use_beam_search", "allowed_token_ids", "structured_outputs", "suffix"])
def test_fields_outside_the_allowlist_are_400_naming_them(gateway, field):
    with gateway.client(gateway.tenant_key("limits")) as c:
        resp = complete(c, **{field: 1})
        chat = c.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                    field: 1, "chat_template": "{{ 1 }}"})
    for r in (resp, chat):
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["param"] == field and "unsupported parameter" in resp.json()["error"]["message"]


@pytest.mark.parametrize("fields,param", [
    ({"temperature": 2.5}, "temperature"), ({"top_p": 0}, "top_p"), ({"n": 0}, "n"),
    ({"max_tokens": 0}, "max_tokens"), ({"logprobs": 21}, "logprobs"), ({"presence_penalty": -3}, "presence_penalty"),
    ({"seed": 2**64}, "seed"), ({"stop": ["x"] * 17}, "stop"), ({"logit_bias": {"abc": 1}}, "logit_bias.abc"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5"), ({"stop_token_ids": [-1]}, "stop_token_ids.0"),
    ({"stream_options": {"include_usage": True, "x": 1}}, "stream_options.x"),
])
def test_out_of_range_sampling_values_are_400(gateway, fields, param):
    with gateway.client(gateway.tenant_key("limits")) as c:
        resp = complete(c, **fields)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"].startswith(param)


def test_the_allowed_extras_reach_the_worker(gateway):
    with gateway.client(gateway.tenant_key("limits")) as c:
        plain = complete(c, max_tokens=6, temperature=0)
        longer = complete(c, max_tokens=6, temperature=0, min_tokens=6, ignore_eos=True, top_k=1, min_p=0.0,
                          repetition_penalty=1.0, skip_special_tokens=True, stop=["zzzz"], seed=7)
        chat = c.post("/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 3,
            "temperature": 0, "logprobs": True, "top_logprobs": 2})
    assert plain.status_code == longer.status_code == chat.status_code == 200, (plain.text, longer.text, chat.text)
    assert longer.json()["usage"]["completion_tokens"] == 6  # min_tokens and ignore_eos were applied
    assert len(chat.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2


def test_work_per_request_is_bounded(gateway):
    settings = gateway.settings
    with gateway.client(gateway.tenant_key("limits")) as c:
        many = complete(c, n=settings.request_max_choices + 1, max_tokens=1)
        batch = complete(c, prompt=["a"] * settings.request_max_choices, n=2, max_tokens=1)
        tokens = complete(c, n=4, max_tokens=settings.request_max_generated_tokens // 4 + 1)
        unset = c.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                     "n": settings.request_max_choices})
        fits = complete(c, n=2, max_tokens=1)
    assert many.status_code == batch.status_code == 400 and many.json()["error"]["code"] == "too_many_choices"
    assert tokens.status_code == 400 and tokens.json()["error"]["code"] == "too_many_tokens"
    assert tokens.json()["error"]["param"] == "max_tokens"
    # n x the context length (512 here) fits 16 x 512 < 32768: accepted, not refused by the bound
    assert unset.status_code in (200, 400) and unset.json().get("error", {}).get("code") != "too_many_tokens"
    assert fits.status_code == 200 and len(fits.json()["choices"]) == 2


def test_request_limits_unit():
    limits = RequestLimits(max_choices=4, max_generated_tokens=100, context_tokens=50)
    limits.check(CompletionRequest(model="m", prompt=["a", "b"], n=2, max_tokens=25))
    with pytest.raises(InvalidRequestError, match="5 completions"):
        limits.check(CompletionRequest(model="m", prompt=[[1], [2], [3], [4], [5]]))
    with pytest.raises(InvalidRequestError, match="context length 50"):
        limits.check(CompletionRequest(model="m", prompt="a", n=3))
    limits.check(CompletionRequest(model="m", prompt=[1, 2, 3], n=2))  # one prompt of token ids


def test_one_tenants_requests_in_flight_are_bounded_and_others_unaffected(gateway):
    concurrency: TenantConcurrency = gateway.app.state.services.serving.concurrency
    noisy, quiet = gateway.tenant_key("noisy"), gateway.tenant_key("quiet")
    noisy_id = _tenant_id(gateway, "noisy")
    # The tenant's places all taken (as by long requests in flight), deterministically:
    held = [concurrency.acquire(noisy_id) for _ in range(concurrency.limit)]
    try:
        with gateway.client(noisy) as n, gateway.client(quiet) as q:
            refused = complete(n)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_concurrent_requests"
            assert refused.headers["x-should-retry"] == "true"  # unlike a full quota: later it succeeds
            assert complete(q).status_code == 200  # another tenant is not affected
            held.pop()()
            assert complete(n).status_code == 200
    finally:
        for release in held:
            release()
    assert concurrency.in_flight(noisy_id) == 0


def test_streams_hold_their_place_until_they_end(gateway):
    concurrency: TenantConcurrency = gateway.app.state.services.serving.concurrency
    key, tenant_id = gateway.tenant_key("streamer"), _tenant_id(gateway, "streamer")
    body = {"model": "tiny", "prompt": "Count:", "max_tokens": 400, "stream": True, "ignore_eos": True}
    with gateway.client(key) as c:
        with c.stream("POST", "/v1/completions", json=body) as stream:  # read to the end
            lines = [line for line in stream.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        eventually(lambda: concurrency.in_flight(tenant_id) == 0, 30)
        with c.stream("POST", "/v1/completions", json=body) as stream:  # the client leaves early
            next(stream.iter_lines())
        eventually(lambda: concurrency.in_flight(tenant_id) == 0, 30)
        assert complete(c, stream=True).status_code == 200


def test_tenant_concurrency_unit():
    c = TenantConcurrency(limit=2)
    first, second = c.acquire(1), c.acquire(1)
    with pytest.raises(RateLimitError):
        c.acquire(1)
    c.acquire(2)()  # other tenants count separately
    first()
    first()  # a second release of the same place changes nothing
    assert c.in_flight(1) == 1
    second()
    assert c.in_flight(1) == 0


def _tenant_id(gateway, name: str) -> int:
    return next(t.id for t in gateway.app.state.services.registry.list_tenants() if t.name == name)


def test_metrics_need_the_admin_key_or_their_own_listener(gateway, tmp_path):
    from fastapi.testclient import TestClient

    from server.app import create_app

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {gateway.tenant_key('limits')}"}):
        assert httpx.get(f"{gateway.url}/metrics", headers=headers).status_code == 401
    assert "peftserve_requests_total" in httpx.get(f"{gateway.url}/metrics", headers=ADMIN).text
    port = free_port()
    settings = gateway_settings(tmp_path, database_url=None, metrics_listen=f"127.0.0.1:{port}")
    with TestClient(create_app(settings)):  # the lifespan starts the listener
        assert wait_until_http(f"http://127.0.0.1:{port}/metrics", 10)
        assert "peftserve_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    with pytest.raises(httpx.TransportError):  # and stops it
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_disabling_a_tenant_cancels_its_fine_tuning_jobs(gateway):
    key = gateway.tenant_key("to-disable")
    with gateway.client(key) as c:
        file_id = c.post("/v1/files", data={"purpose": "fine-tune"},
                         files={"file": ("t.jsonl", reverse_task(40))}).json()["id"]
        jobs = [c.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file_id, "hyperparameters": {
            "method": "lora", "rank": 4, "max_steps": 400, "batch_size": 2}}).json()["id"] for _ in range(2)]
    with gateway.admin() as admin:
        assert admin.post("/admin/tenants/to-disable/disable").status_code == 200
    repo = gateway.app.state.services.fine_tuning.repo
    eventually(lambda: all(repo.get_job(j).status.value == "cancelled" for j in jobs), 120)
    assert [repo.get_job(j).status.value for j in jobs] == ["cancelled", "cancelled"]
    with gateway.client(key) as c:
        assert c.get("/v1/fine_tuning/jobs").status_code == 401
    with gateway.admin() as admin:
        admin.post("/admin/tenants/to-disable/enable")


def test_no_prefix_cache_hits_across_tenants(gateway):
    """The gateway salts vLLM's prefix cache per tenant: a prompt one tenant sent is a cache hit
    for that tenant again, never for another (whose time to first token would reveal it)."""
    from tests.metrics_reading import prometheus_sum

    worker = gateway.worker()["url"]
    prompt = "Fact sheet: " + " ".join(f"item {i} is {i * 7 % 13}" for i in range(40))

    def hits_after(key: str) -> float:
        with gateway.client(key) as c:
            assert complete(c, prompt=prompt, max_tokens=1).status_code == 200
        return prometheus_sum(worker, "vllm:prefix_cache_hits_total")

    first, second = gateway.tenant_key("salt-a"), gateway.tenant_key("salt-b")
    start = prometheus_sum(worker, "vllm:prefix_cache_hits_total")
    after_first = hits_after(first)
    after_repeat = hits_after(first)
    after_other = hits_after(second)
    assert after_repeat > after_first  # caching is on and works within a tenant
    assert after_other == after_repeat, (start, after_first, after_repeat, after_other)
