"""Serving through the gateway on a real vLLM worker: outputs, tenancy, residency, metrics."""

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.gateway_harness import WORKER_HEADERS
from tests.metrics_reading import metric_sum

PROMPT = "The quick brown fox"


def complete(gateway, key: str, model: str, prompt: str = PROMPT, max_tokens: int = 8) -> httpx.Response:
    with gateway.client(key) as c:
        return c.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                               "temperature": 0})


def direct_text(gateway, folder, prompt: str = PROMPT, max_tokens: int = 8) -> str:
    """Greedy output of the worker itself for an adapter, loaded under a name of our own."""
    url = gateway.worker()["url"]
    name = f"direct-{folder.name}"
    with httpx.Client(base_url=url, headers=WORKER_HEADERS, timeout=120) as w:
        w.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)}).raise_for_status()
        try:
            resp = w.post("/v1/completions", json={"model": name, "prompt": prompt, "max_tokens": max_tokens,
                                                   "temperature": 0})
            resp.raise_for_status()
            return resp.json()["choices"][0]["text"]
        finally:
            w.post("/v1/unload_lora_adapter", json={"lora_name": name})


def test_workers_refuse_clients_without_their_key(gateway, lora_factory):
    """Nobody but the gateway can use a worker, load adapters into it or list what it holds."""
    url = gateway.worker()["url"]
    assert url.startswith("http://127.0.0.1:")  # started workers listen on loopback only
    with httpx.Client(base_url=url, timeout=30) as w:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            assert w.get("/v1/models", headers=headers).status_code == 401
            assert w.post("/v1/completions", headers=headers,
                          json={"model": "base", "prompt": "x", "max_tokens": 1}).status_code == 401
            loaded = w.post("/v1/load_lora_adapter", headers=headers,
                            json={"lora_name": "intruder", "lora_path": str(lora_factory(3))})
            assert loaded.status_code == 401
        assert w.get("/v1/models", headers=WORKER_HEADERS).status_code == 200
        assert "intruder" not in w.get("/v1/models", headers=WORKER_HEADERS).text


@pytest.fixture(scope="module")
def two_tenants(gateway, lora_factory):
    a_folder, b_folder = lora_factory(1), lora_factory(2, rank=16, targets="all")
    assert gateway.add_adapter("alpha", "summarize", a_folder).status_code == 201
    assert gateway.add_adapter("beta", "classify", b_folder).status_code == 201
    return {"alpha": (gateway.tenant_key("alpha"), "summarize", a_folder),
            "beta": (gateway.tenant_key("beta"), "classify", b_folder)}


def test_outputs_equal_worker_direct_and_differ(gateway, two_tenants):
    texts = {}
    for tenant, (key, model, folder) in two_tenants.items():
        resp = complete(gateway, key, model)
        assert resp.status_code == 200, resp.text
        assert resp.json()["model"] == model
        texts[tenant] = resp.json()["choices"][0]["text"]
        assert texts[tenant] == direct_text(gateway, folder)
    base = complete(gateway, two_tenants["alpha"][0], "tiny").json()["choices"][0]["text"]
    assert len({texts["alpha"], texts["beta"], base}) == 3


def test_tenant_isolation(gateway, two_tenants):
    beta_key = two_tenants["beta"][0]
    with gateway.client(beta_key) as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert "classify" in ids and "summarize" not in ids and "tiny" in ids

    stolen = complete(gateway, beta_key, "summarize")
    missing = complete(gateway, beta_key, "no-such-adapter")
    assert stolen.status_code == missing.status_code == 404
    assert stolen.json()["error"]["code"] == missing.json()["error"]["code"] == "model_not_found"
    assert complete(gateway, beta_key, "summarize@1").status_code == 404
    with gateway.client(beta_key) as c:
        assert c.get("/v1/models/summarize").status_code == 404

    for key in (None, "psk-wrong"):
        resp = complete(gateway, key, "summarize")
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"


def test_bad_requests_get_openai_errors(gateway, two_tenants):
    key = two_tenants["alpha"][0]
    with gateway.client(key) as c:
        no_prompt = c.post("/v1/completions", json={"model": "summarize"})
        assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"
        too_long = c.post("/v1/completions", json={"model": "summarize", "prompt": "x", "max_tokens": 100000})
        assert too_long.status_code == 400
        assert "lora-" not in too_long.text  # internal adapter names never leak
        broken = c.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
        admin = c.get("/admin/tenants")
        assert admin.status_code == 401 and admin.json()["error"]["type"] == "authentication_error"


def test_twelve_adapters_through_three_slots(gateway, lora_factory):
    """vLLM holds 3 in memory (--max-cpu-loras) and evicts itself; every answer is still that
    adapter's own, and the gateway never unloads one to make room."""
    folders = {f"task-{i}": lora_factory(100 + i) for i in range(12)}
    for name, folder in folders.items():
        assert gateway.add_adapter("gamma", name, folder).status_code == 201
    expected = {name: direct_text(gateway, folder) for name, folder in folders.items()}
    assert len(set(expected.values())) == 12
    loads_before = metric_sum(gateway.url, "peftserve_adapter_loads_total")

    key = gateway.tenant_key("gamma")
    order = list(folders) * 2
    random.Random(0).shuffle(order)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda name: (name, complete(gateway, key, name)), order))
    for name, resp in answers:
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["text"] == expected[name], name

    assert metric_sum(gateway.url, "peftserve_adapter_loads_total") == loads_before  # registered by the uploads
    with httpx.Client(base_url=gateway.worker()["url"], headers=WORKER_HEADERS, timeout=30) as w:
        registered = {m["id"] for m in w.get("/v1/models").json()["data"] if m.get("parent")}
    assert len(registered) >= 12  # all still registered: none was unloaded to make room


def test_an_adapter_the_worker_lost_is_registered_again(gateway, lora_factory):
    """Another gateway sharing the worker deleted it, or the worker restarted: concurrent
    requests all succeed (the first 404 marks it stale, the next use registers it again)."""
    assert gateway.add_adapter("delta", "cold", lora_factory(7)).status_code == 201
    key = gateway.tenant_key("delta")
    expected = complete(gateway, key, "cold").json()["choices"][0]["text"]
    lora_name = next(a.lora_name for a in gateway.app.state.services.registry.list_adapters() if a.name == "cold")
    with httpx.Client(base_url=gateway.worker()["url"], headers=WORKER_HEADERS, timeout=30) as w:
        assert w.post("/v1/unload_lora_adapter", json={"lora_name": lora_name}).status_code == 200
    loads_before = metric_sum(gateway.url, "peftserve_adapter_loads_total")
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: complete(gateway, key, "cold"), range(8)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert {r.json()["choices"][0]["text"] for r in responses} == {expected}
    assert metric_sum(gateway.url, "peftserve_adapter_loads_total") >= loads_before + 1


def test_openai_client_streaming_and_not(gateway, two_tenants):
    key, model, _ = two_tenants["alpha"]
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key)

    completion = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt=PROMPT, max_tokens=8, temperature=0, stream=True) if c.choices)
    assert completion.model == model and streamed == completion.choices[0].text

    messages = [{"role": "user", "content": "Say hello"}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed_chat = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed_chat == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    assert all(c.model == model for c in chunks)

    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    models = client.models.list()
    assert {m.id for m in models.data} >= {model, "tiny"}


def test_metrics_are_labelled_and_bounded(gateway, two_tenants):
    key, model, _ = two_tenants["alpha"]
    assert complete(gateway, key, model).status_code == 200
    labels = {"tenant": "alpha", "adapter": model, "base_version": "tiny@1"}
    assert metric_sum(gateway.url, "peftserve_requests_total", **labels) >= 1
    assert metric_sum(gateway.url, "peftserve_generated_tokens_total", **labels) >= 8
    assert metric_sum(gateway.url, "peftserve_request_latency_seconds_count", **labels) >= 1
    assert metric_sum(gateway.url, "peftserve_worker_up") == 1
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"
