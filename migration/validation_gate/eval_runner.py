"""Run an adapter's eval set (or sample prompts) on a worker, greedily, for the gate."""

import asyncio

from adapters.format.eval_set import EvalItem
from migration.worker_port import EngineClient
from adapters.errors import WorkerRequestError


async def generate_one(client: EngineClient, model: str, item: EvalItem, max_tokens: int) -> str:
    params = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if item.messages is not None:
        resp = await client.post("/v1/chat/completions",
                                 {**params, "messages": [m.model_dump() for m in item.messages]})
        extract = lambda body: body["choices"][0]["message"]["content"] or ""  # noqa: E731
    else:
        resp = await client.post("/v1/completions", {**params, "prompt": item.prompt})
        extract = lambda body: body["choices"][0]["text"]  # noqa: E731
    if resp.status_code != 200:
        # The worker's own status: 4xx is this request's (the adapter's or its eval item's) fault,
        # 5xx the worker's; the trial tells them apart.
        raise WorkerRequestError(f"eval generation failed: {resp.status_code} {resp.text[:300]}",
                                 status_code=resp.status_code, code="worker_error")
    return extract(resp.json())


async def generate_outputs(client: EngineClient, model: str, items: list[EvalItem], *, max_tokens: int = 32,
                           concurrency: int = 8) -> list[str]:
    """Outputs in item order; ``concurrency`` requests at a time so the engine can batch them."""
    limit = asyncio.Semaphore(concurrency)

    async def run(item: EvalItem) -> str:
        async with limit:
            return await generate_one(client, model, item, max_tokens)

    return list(await asyncio.gather(*(run(i) for i in items)))
