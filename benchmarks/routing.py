"""Adapter-affinity routing vs round-robin: resident-adapter hit rate and throughput.

Two vLLM workers of SmolLM2-135M-Instruct (8 adapter slots each) behind one gateway; 64
adapters whose popularity follows a Zipf law (a few busy tenants, a long tail), the same
request sequence for both policies. Each round starts a fresh gateway with the policy under
test and empties both workers' adapter caches first; rounds alternate between the policies so
machine drift hits both alike. Hit rate = share of requests whose adapter was already resident
on the worker that served it (1 - adapter loads / requests, from the gateway's metrics).

    .venv/bin/python benchmarks/routing.py            # prints a table, writes benchmarks/results/routing.json
    .venv/bin/python benchmarks/routing.py --quick    # a smoke run
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_support import (ADMIN_KEY, CACHE, PROMPT, ROOT, demo_base_dir, make_adapters, median,
                                      metric_sum, register, run_load, start_process, stop_process,
                                      wait_http)
from server.workers.worker_process import worker_command, worker_environment
from server.settings import Settings

POLICIES = ("affinity", "round_robin")


def zipf_sequence(names: list[str], n: int, s: float, seed: int) -> list[str]:
    weights = [1 / (rank + 1) ** s for rank in range(len(names))]
    return random.Random(seed).choices(names, weights=weights, k=n)


def start_workers(base_dir: Path, slots: int, run_dir: Path, ports: list[int]) -> list[subprocess.Popen]:
    settings = Settings(data_dir=run_dir, max_resident_adapters=slots, max_loras_per_batch=4)
    return [start_process(worker_command(settings, str(base_dir), port), worker_environment(settings),
                          run_dir / f"worker-{port}.log") for port in ports]


def empty_workers(urls: list[str]) -> None:
    for url in urls:
        with httpx.Client(base_url=url, timeout=60) as c:
            for model in c.get("/v1/models").json()["data"]:
                if model.get("parent"):
                    c.post("/v1/unload_lora_adapter", json={"lora_name": model["id"]}).raise_for_status()


def run_round(policy: str, args, data_dir: Path, worker_urls: list[str], sequence: list[str], key_file: Path,
              log: Path) -> dict:
    port = 8891
    env = {"PEFTSERVE_DATA_DIR": str(data_dir), "PEFTSERVE_PORT": str(port), "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           "PEFTSERVE_ROUTING": policy, "PEFTSERVE_MAX_RESIDENT_ADAPTERS": str(args.slots),
           "PEFTSERVE_WORKER_URLS": json.dumps({"smollm2-135m@1": worker_urls})}
    empty_workers(worker_urls)
    gateway = start_process([sys.executable, "-m", "server.cli.main", "serve"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, "/ready?all=true")
        result = asyncio.run(run_load(url, sequence, requests=len(sequence), concurrency=args.concurrency,
                                      max_tokens=args.max_tokens, prompt=PROMPT, api_key=key_file.read_text()))
        loads = metric_sum(url, "peftserve_adapter_loads_total")
    finally:
        stop_process(gateway)
    # Since the gateway stopped evicting (vLLM's own LRU does), ``loads`` counts first
    # registrations per worker only; results/routing.json predates that change.
    return {"policy": policy, "requests": result.requests, "errors": result.errors, "loads": loads,
            "hit_rate": 1 - loads / result.requests, "tok_per_s": result.tok_per_s,
            "seconds": result.seconds}


def prepare_registry(data_dir: Path, base_dir: Path, adapters: list[Path], worker_urls: list[str],
                     key_file: Path, log: Path) -> list[str]:
    """Register the adapters once (through a gateway, with the live check) and keep a tenant key."""
    env = {"PEFTSERVE_DATA_DIR": str(data_dir), "PEFTSERVE_PORT": "8891", "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           "PEFTSERVE_WORKER_URLS": json.dumps({"smollm2-135m@1": worker_urls})}
    subprocess.run([sys.executable, "-m", "server.cli.main", "base", "import", str(base_dir), "--name",
                    "smollm2-135m", "--json"], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
    gateway = start_process([sys.executable, "-m", "server.cli.main", "serve"], env, log)
    try:
        wait_http("http://127.0.0.1:8891", "/ready?all=true")
        admin = httpx.Client(base_url="http://127.0.0.1:8891", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                             timeout=600)
        key_file.write_text(admin.post("/admin/tenants", json={"name": "bench"}).json()["api_key"])
        names = [f"adapter-{i}" for i in range(len(adapters))]
        for name, folder in zip(names, adapters):
            register(admin, name, folder)
        return names
    finally:
        stop_process(gateway)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8, help="resident adapter slots per worker")
    parser.add_argument("--requests", type=int, default=160, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per policy, alternating")
    parser.add_argument("--zipf", type=float, default=1.0, help="popularity skew of the adapters")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "routing.json")
    args = parser.parse_args()
    if args.quick:
        args.adapters, args.slots, args.requests, args.rounds = 16, 2, 24, 1

    base_dir = demo_base_dir(CACHE / "base-data")
    adapters = make_adapters(base_dir, CACHE / "adapters", args.adapters)
    run_dir = CACHE / "routing-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    ports = [8892, 8893]
    worker_urls = [f"http://127.0.0.1:{p}" for p in ports]
    workers = start_workers(base_dir, args.slots, run_dir, ports)
    rounds = []
    try:
        for url in worker_urls:
            wait_http(url, "/health")
        key_file = run_dir / "key"
        names = prepare_registry(run_dir / "data", base_dir, adapters, worker_urls, key_file, run_dir / "setup.log")
        sequence = zipf_sequence(names, args.requests, args.zipf, seed=0)
        for r in range(args.rounds):
            for policy in POLICIES if r % 2 == 0 else reversed(POLICIES):
                print(f"round {r + 1}: {policy} ...", flush=True)
                rounds.append(run_round(policy, args, run_dir / "data", worker_urls, sequence, key_file,
                                        run_dir / f"gateway-{policy}-{r}.log"))
    finally:
        for w in workers:
            stop_process(w)

    summary = {}
    for policy in POLICIES:
        mine = [x for x in rounds if x["policy"] == policy]
        summary[policy] = {"hit_rate": median([x["hit_rate"] for x in mine]),
                           "tok_per_s": median([x["tok_per_s"] for x in mine]),
                           "loads_per_round": median([x["loads"] for x in mine]),
                           "errors": sum(x["errors"] for x in mine)}
    ratio = summary["affinity"]["tok_per_s"] / summary["round_robin"]["tok_per_s"]
    print(f"\n2 workers x {args.slots} slots, {args.adapters} adapters (Zipf s={args.zipf}), {args.requests} "
          f"requests/round, concurrency {args.concurrency}, {args.max_tokens} tokens, {args.rounds} rounds/policy")
    print(f"{'policy':<12} {'hit rate':>9} {'loads/round':>12} {'tok/s':>8} {'errors':>7}")
    for policy, s in summary.items():
        print(f"{policy:<12} {s['hit_rate']:>9.1%} {s['loads_per_round']:>12.0f} {s['tok_per_s']:>8.1f} "
              f"{s['errors']:>7}")
    print(f"throughput affinity / round-robin: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                    "rounds": rounds, "summary": summary, "throughput_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
