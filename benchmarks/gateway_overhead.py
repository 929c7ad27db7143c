"""The gateway's own cost per request, with the engine taken out of the picture.

The gateway runs in front of an instant stand-in worker (benchmarks/instant_worker.py); the
same requests go to that worker directly and through the gateway, interleaved, on kept-alive
connections. The median of the paired differences is what the gateway adds (auth, model
resolution, residency, proxying, relaying, metrics). benchmarks/serving.py measures the same
on the real engine, where CPU sharing with vLLM adds to it on a 2-core machine.

    .venv/bin/python benchmarks/gateway_overhead.py [--pairs 300]
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_support import CACHE, ROOT, demo_base_dir, make_adapters, median, wait_http
from benchmarks.serving import register, start_process, stop_process

ADMIN_KEY = "psa-bench"


async def one(client: httpx.AsyncClient, model: str, stream: bool) -> float:
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "stream": stream}
    started = time.perf_counter()
    if stream:
        elapsed = None
        async with client.stream("POST", "/v1/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if elapsed is None and line.startswith("data: {"):
                    elapsed = time.perf_counter() - started  # first token
        return elapsed
    resp = await client.post("/v1/completions", json=body)
    resp.raise_for_status()
    return time.perf_counter() - started


async def paired(worker_url: str, gateway_url: str, key: str, worker_model: str, model: str, stream: bool,
                 pairs: int) -> dict:
    direct, through = [], []
    async with httpx.AsyncClient(base_url=worker_url) as w, \
            httpx.AsyncClient(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as g:
        for i in range(pairs + 20):
            d, c = await one(w, worker_model, stream), await one(g, model, stream)
            if i >= 20:  # warm-up
                direct.append(d)
                through.append(c)
    return {"direct_ms_p50": median(direct) * 1000, "gateway_ms_p50": median(through) * 1000,
            "added_ms_paired_median": median([c - d for d, c in zip(direct, through)]) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gateway_overhead.json")
    args = parser.parse_args()

    base_dir = demo_base_dir(CACHE / "base-data")  # the adapter is validated against the real base
    adapter = make_adapters(base_dir, CACHE / "adapters", 1)[0]
    run_dir = CACHE / "overhead-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    worker_port, port = 8795, 8796
    worker_url, url = f"http://127.0.0.1:{worker_port}", f"http://127.0.0.1:{port}"
    env = {"PEFTSERVE_DATA_DIR": str(run_dir / "data"), "PEFTSERVE_PORT": str(port), "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           "PEFTSERVE_WORKER_URLS": json.dumps({"smollm2-135m@1": worker_url})}
    subprocess.run([sys.executable, "-m", "server.cli.main", "base", "import", str(base_dir), "--name", "smollm2-135m",
                    "--json"], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
    worker = start_process([sys.executable, "benchmarks/instant_worker.py", str(worker_port)], {},
                           run_dir / "worker.log")
    gateway = start_process([sys.executable, "-m", "server.cli.main", "serve"], env, run_dir / "gateway.log")
    try:
        wait_http(worker_url, "/health")
        wait_http(url, "/ready?all=true")
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
        key = admin.post("/admin/tenants", json={"name": "bench"}).json()["api_key"]
        register(admin, "bench-0", adapter)
        rows = []
        for label, model, stream in [("base, streamed (to first token)", "smollm2-135m", True),
                                     ("adapter, streamed (to first token)", "bench-0", True),
                                     ("adapter, not streamed", "bench-0", False)]:
            result = asyncio.run(paired(worker_url, url, key, "base", model, stream, args.pairs))
            rows.append({"request": label, **result})
    finally:
        stop_process(gateway)
        stop_process(worker)

    print(f"\n{'request':<38}{'direct p50 ms':>15}{'gateway p50 ms':>16}{'added ms (paired)':>19}")
    for r in rows:
        print(f"{r['request']:<38}{r['direct_ms_p50']:>15.2f}{r['gateway_ms_p50']:>16.2f}"
              f"{r['added_ms_paired_median']:>19.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pairs": args.pairs, "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
