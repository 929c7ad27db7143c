"""Load through the real gateway and worker: 200 concurrent streams over 32 adapters of four
tenants and the bare base, far more adapters than the worker keeps in memory (3) or batches at
once (2). No request fails, and every answer equals that model's answer alone (greedy): no
tenant's adapter changes another's tokens, under load, through vLLM's own evictions."""

import asyncio
import json

import httpx

TENANTS = [f"load-{i}" for i in range(4)]
ADAPTERS_PER_TENANT = 8
STREAMS = 200
MAX_TOKENS = 4
PROMPT = "The capital of France is"


def answer_alone(gateway, key: str, model: str) -> str:
    with gateway.client(key) as c:
        resp = c.post("/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                                               "temperature": 0})
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["text"]


async def stream(client: httpx.AsyncClient, key: str, model: str) -> tuple[int, str]:
    body = {"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    text = []
    async with client.stream("POST", "/v1/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                text += [c["text"] for c in chunk["choices"]]
        return resp.status_code, "".join(text)


def test_200_concurrent_streams_over_32_adapters_and_the_base(gateway, lora_factory):
    models: list[tuple[str, str]] = []  # (tenant key, model)
    for t, tenant in enumerate(TENANTS):
        key = gateway.tenant_key(tenant)
        models.append((key, "tiny"))
        for i in range(ADAPTERS_PER_TENANT):
            name = f"load-{i}"  # the same names in every tenant: each must get its own
            resp = gateway.add_adapter(tenant, name, lora_factory(300 + t * ADAPTERS_PER_TENANT + i))
            assert resp.status_code == 201, resp.text
            models.append((key, name))
    alone = {(key, model): answer_alone(gateway, key, model) for key, model in models}
    assert len(set(alone.values())) > len(models) // 2  # the adapters really change the answers

    async def run() -> list[tuple[tuple[str, str], int, str]]:
        limits = httpx.Limits(max_connections=STREAMS + 8)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=300, limits=limits) as client:
            picks = [models[i % len(models)] for i in range(STREAMS)]
            results = await asyncio.gather(*(stream(client, key, model) for key, model in picks))
        return [(pick, status, text) for pick, (status, text) in zip(picks, results)]

    outcomes = asyncio.run(run())
    failed = [(model, status) for (_, model), status, _ in outcomes if status != 200]
    assert not failed, failed
    wrong = [(model, text, alone[(key, model)]) for (key, model), _, text in outcomes if text != alone[(key, model)]]
    assert not wrong, wrong[:5]
