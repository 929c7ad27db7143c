"""The long form of tests/test_load_isolation.py, on the real SmolLM2-135M-Instruct: many
concurrent streams through one gateway over many tenants' adapters and the bare base, more
adapters than the worker keeps in memory or batches at once. Counts failed requests and answers
that differ from the same model's answer alone (greedy), and where they first differ.

    .venv/bin/python -m benchmarks.load_isolation [--tenants 4] [--adapters 16] [--streams 400]

Prints a table; writes benchmarks/results/load_isolation.json (with versions and the commit).
A leak between tenants changes answers from their first tokens on; bf16 batch noise on CPU can
flip a near-tie late in an answer, which is why the first differing position is reported.
"""

import argparse
import asyncio
import json
import shutil
import statistics
import time

import httpx

from benchmarks.bench_support import (ADMIN_KEY, CACHE, ROOT, demo_base_dir, make_adapters, register, run_metadata,
                                      start_gateway, stop_process)

PROMPT = "Write one sentence about the sea:"


async def answer(client: httpx.AsyncClient, key: str, model: str, max_tokens: int) -> tuple[int, list[str], float]:
    """(status, tokens as streamed, time to first token)."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started, first, pieces = time.perf_counter(), None, []
    async with client.stream("POST", "/v1/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return 599, pieces, float("nan")
                for choice in chunk["choices"]:
                    first = first or time.perf_counter()
                    pieces.append(choice["text"])
        return resp.status_code, pieces, (first or time.perf_counter()) - started


def first_difference(a: list[str], b: list[str]) -> int | None:
    """Character offset where the two answers first differ, or None."""
    x, y = "".join(a), "".join(b)
    if x == y:
        return None
    return next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--adapters", type=int, default=16, help="adapters per tenant")
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--slots", type=int, default=8, help="adapters the worker keeps in memory")
    parser.add_argument("--max-loras", type=int, default=4, help="distinct adapters per batch")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load_isolation.json"))
    args = parser.parse_args()

    base_dir = demo_base_dir(CACHE / "base-data")
    folders = make_adapters(base_dir, CACHE / "adapters", args.tenants * args.adapters)
    run_dir = CACHE / "load-isolation-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    gateway, url = start_gateway(run_dir, base_dir, 8793, {
        "PEFTSERVE_MAX_RESIDENT_ADAPTERS": str(args.slots), "PEFTSERVE_MAX_LORAS_PER_BATCH": str(args.max_loras),
        "PEFTSERVE_WORKER_PORT_START": "8794", "PEFTSERVE_TENANT_MAX_CONCURRENT_REQUESTS": str(args.streams)})
    try:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=600)
        models: list[tuple[str, str]] = []
        for t in range(args.tenants):
            tenant = f"tenant-{t}"
            key = admin.post("/admin/tenants", json={"name": tenant}).json()["api_key"]
            models.append((key, "smollm2-135m"))
            for i in range(args.adapters):
                register(admin, f"a{i}", folders[t * args.adapters + i], tenant=tenant)
                models.append((key, f"a{i}"))
        print(f"{len(models)} models registered; answers alone ...", flush=True)

        async def run() -> tuple[dict, list, float, list]:
            limits = httpx.Limits(max_connections=args.streams + 8)
            async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
                alone = {}
                for key, model in models:
                    status, pieces, _ = await answer(client, key, model, args.max_tokens)
                    assert status == 200, (model, status)
                    alone[(key, model)] = pieces
                picks = [models[i % len(models)] for i in range(args.streams)]
                started = time.perf_counter()
                loaded = await asyncio.gather(*(answer(client, k, m, args.max_tokens) for k, m in picks))
                seconds = time.perf_counter() - started
                # Control: the same load on the bare base only (no adapter anywhere in the
                # batches): what batching alone changes in greedy answers on this engine.
                bases = [(k, m) for k, m in models if m == "smollm2-135m"]
                control_picks = [bases[i % len(bases)] for i in range(args.streams)]
                control = await asyncio.gather(*(answer(client, k, m, args.max_tokens) for k, m in control_picks))
                return alone, list(zip(picks, loaded)), seconds, list(zip(control_picks, control))

        alone, outcomes, seconds, control = asyncio.run(run())
    finally:
        stop_process(gateway)

    failed = sum(1 for _, (status, _, _) in outcomes if status != 200)
    differences = [first_difference(pieces, alone[pick]) for pick, (status, pieces, _) in outcomes if status == 200]
    differing = [d for d in differences if d is not None]
    control_differing = [d for d in (first_difference(p, alone[pick]) for pick, (s, p, _) in control if s == 200)
                         if d is not None]
    base_in_mixed = [first_difference(p, alone[pick]) for pick, (s, p, _) in outcomes
                     if s == 200 and pick[1] == "smollm2-135m"]
    ttfts = sorted(t for _, (s, _, t) in outcomes if s == 200)
    tokens = sum(len(p) for _, (s, p, _) in outcomes if s == 200)
    result = {
        "benchmark": "load_isolation", "settings": vars(args), "models": len(models),
        "distinct_answers_alone": len({"".join(v) for v in alone.values()}),
        "streams": len(outcomes), "failed": failed, "differing_answers": len(differing),
        "first_difference_chars": sorted(differing),
        "base_answers_in_mixed_load": len(base_in_mixed),
        "base_answers_differing_in_mixed_load": sum(d is not None for d in base_in_mixed),
        "control_base_only_streams": len(control), "control_differing_answers": len(control_differing),
        "control_first_difference_chars": sorted(control_differing), "seconds": seconds, "tok_per_s": tokens / seconds,
        "ttft_ms_p50": statistics.median(ttfts) * 1000 if ttfts else None,
        "ttft_ms_p99": ttfts[int(0.99 * (len(ttfts) - 1))] * 1000 if ttfts else None,
        "meta": run_metadata(),
    }
    print(f"\n{'streams':>8}{'models':>8}{'failed':>8}{'differ':>8}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}")
    print(f"{result['streams']:>8}{result['models']:>8}{failed:>8}{len(differing):>8}{result['tok_per_s']:>9.1f}"
          f"{result['ttft_ms_p50']:>10.0f}{result['ttft_ms_p99']:>10.0f}")
    print(f"control, base model only, same load: {len(control_differing)} of {len(control)} answers differ from "
          f"the base's answer alone (first at characters {sorted(set(control_differing))})")
    print(f"base-model answers inside the mixed load: {result['base_answers_differing_in_mixed_load']} of "
          f"{len(base_in_mixed)} differ")
    if differing:
        print(f"mixed load: first differing characters {sorted(set(differing))}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
