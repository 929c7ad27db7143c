"""Serving benchmark on the real SmolLM2-135M-Instruct: what does the gateway cost over vLLM?

Rows, all in one run (machines are noisy, so compare ratios within a run):
  (a) the worker directly, LoRA disabled;  (b) the worker directly with K adapters;
  (c) through the gateway with K adapters, for K = 1, 8, 32 and one K above the resident slots.
Plus: cold adapter load (request to first token), swap cost (evict + load), and the gateway's
added p50 latency at concurrency 1. Prints a table and writes benchmarks/results/serving.json.

    .venv/bin/python benchmarks/serving.py [--quick]
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_support import (ADMIN_KEY, CACHE, PROMPT, ROOT, LoadResult, demo_base_dir, make_adapters,
                                      median, register, run_load, start_process, stop_process, stream_one,
                                      wait_http)
from server.engine.worker_process import CPU_WORKER_ENV

def measure_plain_worker(base_dir: Path, args, run_dir: Path) -> LoadResult:
    port = 8790
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base_dir),
           "--served-model-name", "base", "--port", str(port), "--enforce-eager", "--max-model-len", "2048",
           "--disable-uvicorn-access-log"]
    proc = start_process(cmd, {**CPU_WORKER_ENV}, run_dir / "plain-worker.log")
    try:
        wait_http(f"http://127.0.0.1:{port}", "/health")
        asyncio.run(run_load(f"http://127.0.0.1:{port}", ["base"], requests=4, concurrency=4, max_tokens=4,
                             prompt=PROMPT))  # warm-up
        return asyncio.run(run_load(f"http://127.0.0.1:{port}", ["base"], requests=args.requests,
                                    concurrency=args.concurrency, max_tokens=args.max_tokens, prompt=PROMPT))
    finally:
        stop_process(proc)


async def first_token_s(url: str, model: str, key: str | None) -> float:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as c:
        ttft, _ = await stream_one(c, model, PROMPT, 1)
        return ttft


async def paired_latency(worker_url: str, gateway_url: str, key: str, direct_name: str, name: str,
                         pairs: int) -> tuple[list[float], list[float]]:
    """Interleaved one-token requests on two kept-alive connections: the gateway's added latency
    is the difference of the medians, with machine drift hitting both sides alike."""
    direct, gateway = [], []
    async with httpx.AsyncClient(base_url=worker_url, timeout=600) as w, \
            httpx.AsyncClient(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as g:
        for i in range(pairs + 3):
            d, _ = await stream_one(w, direct_name, PROMPT, 1)
            c, _ = await stream_one(g, name, PROMPT, 1)
            if i >= 3:  # warm-up
                direct.append(d)
                gateway.append(c)
    return direct, gateway


def internal_lora_names(data_dir: Path) -> dict[str, str]:
    """Adapter name -> the name the gateway loads it under on the worker (from its registry)."""
    from adapters.registry.database import make_engine, make_session_factory
    from adapters.registry.repository import Registry

    engine = make_engine(f"sqlite:///{data_dir / 'registry.db'}")
    try:
        return {a.name: a.lora_name for a in Registry(make_session_factory(engine)).list_adapters()}
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating b/c repetitions per K")
    parser.add_argument("--slots", type=int, default=32, help="resident adapter slots of the worker")
    parser.add_argument("--latency-pairs", type=int, default=100, help="interleaved requests for added latency")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.concurrency, args.max_tokens, args.rounds, args.slots = 16, 4, 8, 1, 4
        args.latency_pairs = 10
    ks = [1, 8, 32] if not args.quick else [1, 2, 4]
    over = args.slots * 2

    base_dir = demo_base_dir(CACHE / "base-data")
    adapters = make_adapters(base_dir, CACHE / "adapters", over + 8)
    run_dir = CACHE / "serving-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    print("(a) plain worker, LoRA disabled ...", flush=True)
    plain = measure_plain_worker(base_dir, args, run_dir)

    port = 8791
    env = {"PEFTSERVE_DATA_DIR": str(run_dir / "data"), "PEFTSERVE_PORT": str(port), "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           "PEFTSERVE_MAX_RESIDENT_ADAPTERS": str(args.slots), "PEFTSERVE_MAX_LORAS_PER_BATCH": "8",
           "PEFTSERVE_WORKER_PORT_START": "8792"}
    subprocess.run([sys.executable, "-m", "server.cli.main", "base", "import", str(base_dir), "--name", "smollm2-135m",
                    "--json"], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
    gateway = start_process([sys.executable, "-m", "server.cli.main", "serve"], env, run_dir / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    results: dict = {"settings": vars(args) | {"out": str(args.out)}, "rows": []}
    try:
        wait_http(url, "/ready")
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=600)
        key = admin.post("/admin/tenants", json={"name": "bench"}).json()["api_key"]
        names = [f"lora-{i}" for i in range(len(adapters))]
        for name, folder in zip(names, adapters):
            register(admin, name, folder)
        worker_url = admin.get("/admin/workers").json()[0]["url"]

        # Cold load (a free slot) then a warm request, for a few fresh adapters.
        cold, warm = [], []
        for name in names[over:over + 4]:
            cold.append(asyncio.run(first_token_s(url, name, key)))
            warm.append(asyncio.run(first_token_s(url, name, key)))

        def load(target_url, models, api_key, requests=args.requests, concurrency=args.concurrency,
                 max_tokens=args.max_tokens):
            return asyncio.run(run_load(target_url, models, requests=requests, concurrency=concurrency,
                                        max_tokens=max_tokens, prompt=PROMPT, api_key=api_key))

        results["rows"].append(row("a", "worker, LoRA disabled", 0, [plain]))
        lora_names = internal_lora_names(run_dir / "data")
        for k in [*ks, over]:
            load(url, names[:k], key, requests=k, concurrency=1, max_tokens=1)  # the gateway loads them
            if k <= args.slots:
                # (b) addresses the very adapters the gateway loaded, by their worker names, so both
                # sides share vLLM's adapter cache and differ only by the gateway in between.
                direct_names = [lora_names[n] for n in names[:k]]
            else:
                # More adapters than slots: vLLM manages its own cache of directly registered ones.
                direct_names = [f"direct-{i}" for i in range(k)]
                for dn, folder in zip(direct_names, adapters):
                    httpx.post(f"{worker_url}/v1/load_lora_adapter", json={"lora_name": dn,
                                                                           "lora_path": str(folder)}, timeout=60)
            load(worker_url, direct_names, None, requests=min(k, 16), max_tokens=2)  # warm-up
            load(url, names[:k], key, requests=min(k, 16), max_tokens=2)
            b_runs, c_runs = [], []
            for r in range(args.rounds):  # alternate the order so drift hits both sides alike
                print(f"K={k}: round {r + 1}, (b) direct and (c) gateway ...", flush=True)
                if r % 2 == 0:
                    b_runs.append(load(worker_url, direct_names, None))
                    c_runs.append(load(url, names[:k], key))
                else:
                    c_runs.append(load(url, names[:k], key))
                    b_runs.append(load(worker_url, direct_names, None))
            for dn in direct_names if k > args.slots else ():
                httpx.post(f"{worker_url}/v1/unload_lora_adapter", json={"lora_name": dn}, timeout=60)
            label = f"K={k}" + (f" > {args.slots} slots" if k > args.slots else "")
            results["rows"].append(row("b", f"worker direct, {label}", k, b_runs))
            results["rows"].append(row("c", f"gateway, {label}", k, c_runs))

        # Swap: slots are full after the K>slots row, so a cold adapter evicts one first.
        swap = [asyncio.run(first_token_s(url, name, key)) for name in names[over + 4:over + 8]]

        # Added latency at concurrency 1 with one resident adapter (TTFT of 1-token requests).
        asyncio.run(first_token_s(url, names[0], key))
        lat_b, lat_c = asyncio.run(paired_latency(worker_url, url, key, lora_names[names[0]], names[0],
                                                  args.latency_pairs))
        metrics_text = httpx.get(f"{url}/metrics").text
    finally:
        stop_process(gateway)

    results["adapter_load"] = {
        "cold_first_token_ms_p50": median(cold) * 1000, "warm_first_token_ms_p50": median(warm) * 1000,
        "swap_first_token_ms_p50": median(swap) * 1000,
        "cold_load_cost_ms": (median(cold) - median(warm)) * 1000,
        "swap_cost_ms": (median(swap) - median(warm)) * 1000,
    }
    results["latency_c1_samples"] = {"direct_s": lat_b, "gateway_s": lat_c}
    results["latency_c1"] = {"direct_ttft_ms_p50": median(lat_b) * 1000, "gateway_ttft_ms_p50": median(lat_c) * 1000,
                             "gateway_added_ms_p50": (median(lat_c) - median(lat_b)) * 1000,
                             "gateway_added_ms_paired_median": median([c - b for b, c in zip(lat_b, lat_c)]) * 1000}
    results["evictions_seen"] = sum(float(line.split()[-1]) for line in metrics_text.splitlines()
                                    if line.startswith("peftserve_adapter_evictions_total{"))
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


def row(kind: str, label: str, k: int, runs: list[LoadResult]) -> dict:
    ttft = [t for r in runs for t in r.ttft_s]
    pooled = LoadResult(requests=sum(r.requests for r in runs), tokens=sum(r.tokens for r in runs),
                        seconds=sum(r.seconds for r in runs), ttft_s=ttft, errors=sum(r.errors for r in runs))
    return {"kind": kind, "label": label, "k": k, "tok_per_s": pooled.tok_per_s,
            "ttft_ms_p50": pooled.ttft_pct(50), "ttft_ms_p99": pooled.ttft_pct(99), "errors": pooled.errors,
            "requests": pooled.requests}


def print_table(results: dict) -> None:
    rows = results["rows"]
    direct = {r["k"]: r for r in rows if r["kind"] == "b"}
    print(f"\n{'row':<4}{'setup':<34}{'tok/s':>9}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'vs (b)':>9}{'errors':>8}")
    for r in rows:
        ratio = f"{r['tok_per_s'] / direct[r['k']]['tok_per_s']:.3f}" if r["kind"] == "c" else ""
        print(f"{r['kind']:<4}{r['label']:<34}{r['tok_per_s']:>9.1f}{r['ttft_ms_p50']:>13.1f}"
              f"{r['ttft_ms_p99']:>13.1f}{ratio:>9}{r['errors']:>8}")
    a, lat = results["adapter_load"], results["latency_c1"]
    print(f"\ncold adapter load: first token {a['cold_first_token_ms_p50']:.1f} ms vs warm "
          f"{a['warm_first_token_ms_p50']:.1f} ms (load cost {a['cold_load_cost_ms']:.1f} ms)")
    print(f"swap (evict + load): first token {a['swap_first_token_ms_p50']:.1f} ms (cost {a['swap_cost_ms']:.1f} ms)")
    print(f"concurrency 1, {len(results['latency_c1_samples']['direct_s'])} interleaved pairs, TTFT p50: direct {lat['direct_ttft_ms_p50']:.1f} ms, gateway "
          f"{lat['gateway_ttft_ms_p50']:.1f} ms (added {lat['gateway_added_ms_p50']:.2f} ms; "
          f"median of paired differences {lat['gateway_added_ms_paired_median']:.2f} ms)")


if __name__ == "__main__":
    main()
