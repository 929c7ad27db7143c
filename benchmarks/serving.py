"""Serving benchmark on the real SmolLM2-135M-Instruct: what do adapters cost, and the gateway?

Part 1, the engine (straight to a vLLM worker started with the product's own flags):
  LoRA disabled / vLLM's CPU LoRA path (lora_kernel=vllm) / peftserve's plugin with torch ops
  (lora_kernel=torch) and with its C++ op (lora_kernel=native, the default), for adapters of
  rank 8 and 16 on q,k,v,o and on all 7 linear modules, K = 1, 8, 32 distinct adapters and one K
  above the resident slots; throughput ratio to LoRA disabled, TTFT p50/p99. A short sweep of
  max_loras_per_batch (vLLM --max-loras) for the plugin.
Replicates of the target cell (native, r=16 q,k,v,o, K=32, concurrency 16): fresh LoRA-disabled
  and plugin workers side by side, alternating which goes first; the ratio per pair, its mean
  and a 95% t interval over pairs (the pair is the unit of replication: worker starts vary).
Part 2, the gateway (plugin): through the gateway vs the worker directly with the same adapters,
  cold adapter load, swap (evict + load), added latency at concurrency 1.
All in one run (machines are noisy: compare ratios within a run). Prints tables and writes
benchmarks/results/serving.json with the library versions and the commit.

    .venv/bin/python benchmarks/serving.py [--quick] [--skip-gateway]
    .venv/bin/python benchmarks/serving.py --replicates-only --replicates 5 --out benchmarks/results/serving-target.json
"""

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_support import (ADMIN_KEY, WORKER_HEADERS, WORKER_KEY, CACHE, PROMPT, ROOT, LoadResult,
                                      demo_base_dir, make_adapters, median, register, run_load, run_metadata,
                                      start_gateway, start_process, stop_process, stream_one, wait_http)
from benchmarks.paired_stats import T95
from server.workers.worker_process import CPU_WORKER_ENV, worker_command, worker_environment
from server.settings import Settings

KERNELS = ("vllm", "torch", "native")  # PEFTSERVE_LORA_KERNEL: vLLM's path, the plugin's torch path, its C++ op


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


@contextlib.contextmanager
def lora_worker(settings: Settings, base_dir: Path, port: int, log: Path):
    """A vLLM worker exactly as the gateway starts one (same command line and environment)."""
    proc = start_process(worker_command(settings, str(base_dir), port), worker_environment(settings), log)
    try:
        wait_http(f"http://127.0.0.1:{port}", "/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def load_direct(url: str, names: list[str], folders: list[Path]) -> None:
    for name, folder in zip(names, folders):
        httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)},
                   headers=WORKER_HEADERS,
                   timeout=120).raise_for_status()


def unload_direct(url: str, names: list[str]) -> None:
    for name in names:
        httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": name}, headers=WORKER_HEADERS, timeout=120)


def engine_grid(base_dir: Path, args, run_dir: Path, ks: list[int], over: int) -> list[dict]:
    rows = []
    for kernel in args.kernels:
        settings = Settings(data_dir=run_dir / f"grid-{kernel}", max_resident_adapters=args.slots,
                            max_loras_per_batch=args.max_loras, lora_kernel=kernel)
        print(f"[engine] lora_kernel={kernel}: starting a worker ...", flush=True)
        with lora_worker(settings, base_dir, 8795, run_dir / f"worker-{kernel}.log") as url:
            for targets in ("attn", "all"):
                for rank in args.ranks:
                    folders = make_adapters(base_dir, CACHE / "adapters", over, rank=rank, targets=targets)
                    names = [f"{targets}-r{rank}-{i}" for i in range(over)]
                    load_direct(url, names, folders)
                    for k in [*ks, over]:
                        print(f"[engine] {kernel} {targets} r={rank} K={k} ...", flush=True)
                        # Warm-up: one request per adapter, so vLLM has loaded every one of the K (with
                        # fewer, K = 32 measured disk loads inside the engine loop: runs before
                        # 2026-12-05 understated that row by about 8%).
                        asyncio.run(run_load(url, names[:k], requests=k, concurrency=args.concurrency,
                                             max_tokens=2, prompt=PROMPT))
                        result = asyncio.run(run_load(url, names[:k], requests=args.requests,
                                                      concurrency=args.concurrency, max_tokens=args.max_tokens,
                                                      prompt=PROMPT))
                        rows.append(row("engine", kernel, k, [result], rank=rank, targets=targets))
                    unload_direct(url, names)
    return rows


def max_loras_sweep(base_dir: Path, args, run_dir: Path) -> list[dict]:
    """The plugin with 32 adapters (r=16, q,k,v,o) under other --max-loras values."""
    rows = []
    folders = make_adapters(base_dir, CACHE / "adapters", 32, rank=16, targets="attn")
    names = [f"sweep-{i}" for i in range(32)]
    for max_loras in args.sweep_max_loras:
        settings = Settings(data_dir=run_dir / f"sweep-{max_loras}", max_resident_adapters=args.slots,
                            max_loras_per_batch=max_loras)
        print(f"[sweep] max_loras_per_batch={max_loras} ...", flush=True)
        with lora_worker(settings, base_dir, 8796, run_dir / f"worker-sweep-{max_loras}.log") as url:
            load_direct(url, names, folders)
            asyncio.run(run_load(url, names, requests=32, concurrency=args.concurrency, max_tokens=2, prompt=PROMPT))
            result = asyncio.run(run_load(url, names, requests=args.requests, concurrency=args.concurrency,
                                          max_tokens=args.max_tokens, prompt=PROMPT))
        rows.append(row("sweep", "native", 32, [result], rank=16, targets="attn", max_loras=max_loras))
    return rows


def target_replicates(base_dir: Path, args, run_dir: Path) -> dict:
    """The issue's target cell, ``args.replicates`` times: (LoRA disabled, plugin K=32) pairs of fresh
    workers, the order flipped every other pair so that drift over the run does not favour one."""
    folders = make_adapters(base_dir, CACHE / "adapters", 32, rank=16, targets="attn")
    names = [f"target-{i}" for i in range(32)]
    settings = Settings(data_dir=run_dir / "target", max_resident_adapters=args.slots,
                        max_loras_per_batch=args.max_loras, lora_kernel="native")

    def plugin() -> LoadResult:
        with lora_worker(settings, base_dir, 8797, run_dir / "worker-target.log") as url:
            load_direct(url, names, folders)
            asyncio.run(run_load(url, names, requests=32, concurrency=args.concurrency, max_tokens=2, prompt=PROMPT))
            return asyncio.run(run_load(url, names, requests=args.requests, concurrency=args.concurrency,
                                        max_tokens=args.max_tokens, prompt=PROMPT))

    pairs = []
    for i in range(args.replicates):
        print(f"[target] pair {i + 1}/{args.replicates} ...", flush=True)
        if i % 2 == 0:
            disabled, lora = measure_plain_worker(base_dir, args, run_dir), plugin()
        else:
            lora, disabled = plugin(), measure_plain_worker(base_dir, args, run_dir)
        pairs.append({"disabled_tok_per_s": disabled.tok_per_s, "native_tok_per_s": lora.tok_per_s,
                      "ratio": lora.tok_per_s / disabled.tok_per_s, "errors": disabled.errors + lora.errors,
                      "disabled_first": i % 2 == 0})
    ratios = [p["ratio"] for p in pairs]
    mean = statistics.mean(ratios)
    half = (T95.get(len(ratios) - 1, 1.96) * statistics.stdev(ratios) / math.sqrt(len(ratios))
            if len(ratios) > 1 else None)
    return {"cell": {"kernel": "native", "rank": 16, "targets": "attn", "k": 32, "max_loras": args.max_loras},
            "pairs": pairs, "ratio_mean": mean, "ratio_ci95": None if half is None else [mean - half, mean + half],
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


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
    async with httpx.AsyncClient(base_url=worker_url, headers=WORKER_HEADERS, timeout=600) as w, \
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
    from adapters.registry.registry import Registry

    engine = make_engine(f"sqlite:///{data_dir / 'registry.db'}")
    try:
        return {a.name: a.lora_name for a in Registry(make_session_factory(engine)).list_adapters()}
    finally:
        engine.dispose()


def cold_loads(worker_url: str, folders: list[Path]) -> tuple[list[float], list[float]]:
    """Adapters the worker has never seen: (register with vLLM + first token, then a warm first token)."""
    cold, warm = [], []
    for i, folder in enumerate(folders):
        name = f"cold-{i}"
        started = time.perf_counter()
        load_direct(worker_url, [name], [folder])
        asyncio.run(first_token_s(worker_url, name, WORKER_KEY))
        cold.append(time.perf_counter() - started)
        warm.append(asyncio.run(first_token_s(worker_url, name, WORKER_KEY)))
        unload_direct(worker_url, [name])
    return cold, warm


def gateway_part(base_dir: Path, args, run_dir: Path, ks: list[int], over: int, results: dict) -> None:
    adapters = make_adapters(base_dir, CACHE / "adapters", over + 8)
    cold_folders = make_adapters(base_dir, CACHE / "adapters-cold", 4)  # never registered anywhere
    gateway, url = start_gateway(run_dir, base_dir, 8791, {
        "PEFTSERVE_WORKER_API_KEY": WORKER_KEY, "PEFTSERVE_MAX_RESIDENT_ADAPTERS": str(args.slots),
        "PEFTSERVE_MAX_LORAS_PER_BATCH": str(args.max_loras), "PEFTSERVE_WORKER_PORT_START": "8792"})
    try:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=600)
        key = admin.post("/admin/tenants", json={"name": "bench"}).json()["api_key"]
        names = [f"bench-{i}" for i in range(len(adapters))]
        for name, folder in zip(names, adapters):
            register(admin, name, folder)
        worker_url = admin.get("/admin/workers").json()[0]["url"]

        def load(target_url, models, api_key, requests=args.requests, concurrency=args.concurrency,
                 max_tokens=args.max_tokens):
            return asyncio.run(run_load(target_url, models, requests=requests, concurrency=concurrency,
                                        max_tokens=max_tokens, prompt=PROMPT, api_key=api_key))

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
                load_direct(worker_url, direct_names, adapters)
            load(worker_url, direct_names, WORKER_KEY, requests=min(k, 16), max_tokens=2)  # warm-up
            load(url, names[:k], key, requests=min(k, 16), max_tokens=2)
            b_runs, c_runs = [], []
            for r in range(args.rounds):  # alternate the order so drift hits both sides alike
                print(f"[gateway] K={k}: round {r + 1}, (b) direct and (c) gateway ...", flush=True)
                if r % 2 == 0:
                    b_runs.append(load(worker_url, direct_names, WORKER_KEY))
                    c_runs.append(load(url, names[:k], key))
                else:
                    c_runs.append(load(url, names[:k], key))
                    b_runs.append(load(worker_url, direct_names, WORKER_KEY))
            if k > args.slots:
                unload_direct(worker_url, direct_names)
            label = f"K={k}" + (f" > {args.slots} slots" if k > args.slots else "")
            results["gateway_rows"].append(row("b", f"worker direct, {label}", k, b_runs))
            results["gateway_rows"].append(row("c", f"gateway, {label}", k, c_runs))

        # Swap: slots are full after the K>slots row, so an adapter used before it (and evicted
        # since) is loaded again after evicting the least recently used one.
        swap = [asyncio.run(first_token_s(url, name, key)) for name in names[over + 4:over + 8]]
        cold, warm = cold_loads(worker_url, cold_folders)

        # Added latency at concurrency 1 with one resident adapter (TTFT of 1-token requests).
        asyncio.run(first_token_s(url, names[0], key))
        lat_b, lat_c = asyncio.run(paired_latency(worker_url, url, key, lora_names[names[0]], names[0],
                                                  args.latency_pairs))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating b/c repetitions per K (gateway part)")
    parser.add_argument("--slots", type=int, default=32, help="resident adapter slots of the worker")
    parser.add_argument("--max-loras", type=int, default=None,
                        help="max_loras_per_batch of the main runs (default: the product's, = --slots)")
    parser.add_argument("--sweep-max-loras", type=int, nargs="*", default=[4, 8, 16])
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--latency-pairs", type=int, default=100, help="interleaved requests for added latency")
    parser.add_argument("--skip-gateway", action="store_true", help="part 1 only")
    parser.add_argument("--gateway-only", action="store_true",
                        help="part 2 only (plus the LoRA-disabled reference); use with --out to keep part 1's file")
    parser.add_argument("--replicates", type=int, default=3, help="pairs for the target cell (0: none)")
    parser.add_argument("--replicates-only", action="store_true", help="only the target cell's pairs")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.concurrency, args.max_tokens, args.rounds, args.slots = 16, 4, 8, 1, 4
        args.latency_pairs, args.max_loras, args.sweep_max_loras, args.ranks = 10, 2, [], [16]
        args.replicates = min(args.replicates, 2)
    args.max_loras = args.max_loras or args.slots
    ks = [1, 8, 32] if not args.quick else [1, 2, 4]
    over = args.slots * 2

    base_dir = demo_base_dir(CACHE / "base-data")
    run_dir = CACHE / "serving-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results: dict = {"meta": run_metadata(), "settings": vars(args) | {"out": str(args.out)}, "engine_rows": [],
                     "gateway_rows": []}

    if args.replicates_only:
        results["target"] = target_replicates(base_dir, args, run_dir)
        save(results, args.out)
        print_target(results["target"])
        print(f"\nwrote {args.out}")
        return
    # LoRA disabled before and after the LoRA rows: its drift over the run shows the machine's noise.
    print("[engine] LoRA disabled ...", flush=True)
    disabled = [measure_plain_worker(base_dir, args, run_dir)]
    if not args.gateway_only:
        results["engine_rows"] += engine_grid(base_dir, args, run_dir, ks, over)
        results["engine_rows"] += max_loras_sweep(base_dir, args, run_dir)
    print("[engine] LoRA disabled, again ...", flush=True)
    disabled.append(measure_plain_worker(base_dir, args, run_dir))
    results["disabled"] = [row("disabled", "disabled", 0, [d]) for d in disabled]
    save(results, args.out)  # part 1 is kept even if part 2 fails
    if args.replicates and not args.gateway_only:
        results["target"] = target_replicates(base_dir, args, run_dir)
        save(results, args.out)
    if not args.skip_gateway:
        gateway_part(base_dir, args, run_dir, ks, over, results)
        save(results, args.out)
    print_tables(results)
    print(f"\nwrote {args.out}")


def save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def row(kind: str, label: str, k: int, runs: list[LoadResult], **extra) -> dict:
    ttft = [t for r in runs for t in r.ttft_s]
    pooled = LoadResult(requests=sum(r.requests for r in runs), tokens=sum(r.tokens for r in runs),
                        seconds=sum(r.seconds for r in runs), ttft_s=ttft, errors=sum(r.errors for r in runs))
    return {"kind": kind, "label": label, "k": k, "tok_per_s": pooled.tok_per_s,
            "ttft_ms_p50": pooled.ttft_pct(50), "ttft_ms_p99": pooled.ttft_pct(99), "errors": pooled.errors,
            "requests": pooled.requests, **extra}


def disabled_tok_per_s(results: dict) -> float:
    return sum(r["tok_per_s"] for r in results["disabled"]) / len(results["disabled"])


def print_target(target: dict) -> None:
    c = target["cell"]
    print(f"\ntarget cell ({c['kernel']}, r={c['rank']} {c['targets']}, K={c['k']}, max_loras={c['max_loras']}), "
          f"{len(target['pairs'])} pairs of fresh workers:")
    for i, p in enumerate(target["pairs"], 1):
        print(f"  pair {i}: disabled {p['disabled_tok_per_s']:.1f} tok/s, plugin {p['native_tok_per_s']:.1f} tok/s, "
              f"ratio {p['ratio']:.3f}{'' if p['disabled_first'] else ' (plugin first)'}, errors {p['errors']}")
    ci = target["ratio_ci95"]
    interval = f", 95% t interval [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    print(f"  ratio mean {target['ratio_mean']:.3f}{interval}, "
          f"range {target['ratio_min']:.3f}-{target['ratio_max']:.3f}")


def print_tables(results: dict) -> None:
    base = disabled_tok_per_s(results)
    d = results["disabled"]
    print(f"\nLoRA disabled: {d[0]['tok_per_s']:.1f} tok/s before, {d[-1]['tok_per_s']:.1f} after "
          f"(ratios below use the mean, {base:.1f}); TTFT p50 {d[0]['ttft_ms_p50']:.0f} ms")
    print(f"\n{'kernel':<11}{'targets':<8}{'r':>3}{'K':>4}{'tok/s':>9}{'x disabled':>12}{'TTFT p50':>10}"
          f"{'TTFT p99':>10}{'errors':>8}")
    for r in results["engine_rows"]:
        if r["kind"] == "engine":
            print(f"{r['label']:<11}{r['targets']:<8}{r['rank']:>3}{r['k']:>4}{r['tok_per_s']:>9.1f}"
                  f"{r['tok_per_s'] / base:>12.3f}{r['ttft_ms_p50']:>10.0f}{r['ttft_ms_p99']:>10.0f}{r['errors']:>8}")
    if results.get("target"):
        print_target(results["target"])
    for r in results["engine_rows"]:
        if r["kind"] == "sweep":
            print(f"sweep: native, attn r=16, K=32, max_loras_per_batch={r['max_loras']}: {r['tok_per_s']:.1f} "
                  f"tok/s ({r['tok_per_s'] / base:.3f}x), TTFT p50 {r['ttft_ms_p50']:.0f} ms")
    if not results["gateway_rows"]:
        return
    direct = {r["k"]: r for r in results["gateway_rows"] if r["kind"] == "b"}
    print(f"\n{'row':<4}{'setup':<34}{'tok/s':>9}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'vs (b)':>9}{'errors':>8}")
    for r in results["gateway_rows"]:
        ratio = f"{r['tok_per_s'] / direct[r['k']]['tok_per_s']:.3f}" if r["kind"] == "c" else ""
        print(f"{r['kind']:<4}{r['label']:<34}{r['tok_per_s']:>9.1f}{r['ttft_ms_p50']:>13.1f}"
              f"{r['ttft_ms_p99']:>13.1f}{ratio:>9}{r['errors']:>8}")
    a, lat = results["adapter_load"], results["latency_c1"]
    print(f"\ncold adapter load (never seen by the worker): first token {a['cold_first_token_ms_p50']:.1f} ms vs warm "
          f"{a['warm_first_token_ms_p50']:.1f} ms (load cost {a['cold_load_cost_ms']:.1f} ms)")
    print(f"swap (evict + load): first token {a['swap_first_token_ms_p50']:.1f} ms (cost {a['swap_cost_ms']:.1f} ms)")
    print(f"concurrency 1, {len(results['latency_c1_samples']['direct_s'])} interleaved pairs, TTFT p50: direct "
          f"{lat['direct_ttft_ms_p50']:.1f} ms, gateway {lat['gateway_ttft_ms_p50']:.1f} ms (added "
          f"{lat['gateway_added_ms_p50']:.2f} ms; median of paired differences {lat['gateway_added_ms_paired_median']:.2f} ms)")


if __name__ == "__main__":
    main()
