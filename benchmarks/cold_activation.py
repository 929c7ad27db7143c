"""Cold adapter activation on a worker, request to first token: fetched from the S3-compatible
store by our LoRA resolver (server/workers/vllm_plugin/blob_resolver.py) vs loaded from a local
folder. SmolLM2-135M-Instruct, r=16 LoRAs on q/k/v/o.

One vLLM worker with the resolver pointed at moto's S3 server (an emulator over real HTTP on this
machine, started here). 2 x N distinct adapters, each activated cold exactly once, the two modes
alternating so machine drift hits both alike:
- local: POST /v1/load_lora_adapter with the folder, then a streamed one-token completion (what a
  gateway does when it shares a folder with the worker);
- resolver: a streamed one-token completion naming ``lora-<manifest sha256>``, nothing loaded
  before (what a fetching worker does: manifest, config and weights fetched, hashed, cached, loaded).
A warm request to an adapter already loaded gives the floor. The unit of replication is the
adapter (one cold activation each); the numbers say nothing about a remote store across a network,
about larger adapters, or about a worker busy with other traffic.

    .venv/bin/python benchmarks/cold_activation.py           # table + benchmarks/results/cold_activation.json
    .venv/bin/python benchmarks/cold_activation.py --quick   # a smoke run
"""

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_support import (CACHE, ROOT, demo_base_dir, make_adapters, run_metadata, start_process,
                                      stop_process, wait_http)
from server.workers.worker_process import worker_command, worker_environment
from server.settings import Settings

GOAL_S = 1.0
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def first_token_s(client: httpx.Client, model: str) -> float:
    """Seconds from sending a streamed one-token completion to its first text chunk."""
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0, "stream": True}
    started = time.perf_counter()
    with client.stream("POST", "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{model}: {resp.status_code} {resp.read()[:300]!r}")
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                return time.perf_counter() - started
    raise RuntimeError(f"{model}: no token")


def store_adapters(folders: list[Path], endpoint: str, bucket: str, spool: Path) -> list[str]:
    """Put each adapter's config, weights and manifest in the bucket; their manifest digests."""
    import boto3

    from adapters.registry.models import adapter_manifest
    from adapters.storage.s3_blob_store import S3BlobStore

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    blobs = S3BlobStore(client, bucket, "peftserve/blobs", spool)
    manifests = []
    for folder in folders:
        config, _ = blobs.put_file(folder / "adapter_config.json")
        weights, _ = blobs.put_file(folder / "adapter_model.safetensors")
        manifest, _ = blobs.put_stream(io.BytesIO(adapter_manifest(config, weights)))
        manifests.append(manifest)
    return manifests


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"n": len(values), "median_s": statistics.median(values), "p90_s": ordered[int(0.9 * (len(ordered) - 1))],
            "max_s": ordered[-1], "min_s": ordered[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=20, help="cold activations per mode (distinct adapters)")
    parser.add_argument("--quick", action="store_true", help="3 per mode")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cold_activation.json")
    args = parser.parse_args()
    n = 3 if args.quick else args.adapters

    run_dir = CACHE / "cold-activation"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    os.environ.update(CREDENTIALS)  # the store client here and the worker read them
    base_dir = demo_base_dir(CACHE / "demo-data")
    folders = make_adapters(base_dir, CACHE / "adapters", 2 * n, rank=16)
    local, fetched = folders[0::2], folders[1::2]

    s3_port, worker_port = 19310, 19311
    s3 = start_process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], CREDENTIALS,
                       run_dir / "s3.log")
    worker = None
    try:
        endpoint = f"http://127.0.0.1:{s3_port}"
        wait_http(endpoint, "/", 60)
        manifests = store_adapters(fetched, endpoint, "bench", run_dir / "spool")
        settings = Settings(data_dir=run_dir, blob_store="s3", s3_bucket="bench", s3_endpoint_url=endpoint,
                            s3_region="us-east-1", workers_fetch_adapters=True,
                            max_resident_adapters=max(8, 2 * n + 1))
        worker = start_process(worker_command(settings, str(base_dir), worker_port),
                               worker_environment(settings, None, run_dir / "worker-cache"), run_dir / "worker.log")
        url = f"http://127.0.0.1:{worker_port}"
        wait_http(url, "/health")
        times: dict[str, list[float]] = {"local folder": [], "resolver (S3)": [], "warm (floor)": []}
        with httpx.Client(base_url=url, timeout=120) as c:
            first_token_s(c, "base")  # compile/warm the engine itself, outside every measurement
            for i in range(n):
                started = time.perf_counter()
                c.post("/v1/load_lora_adapter", json={"lora_name": f"local-{i}", "lora_path": str(local[i])}
                       ).raise_for_status()
                load_s = time.perf_counter() - started
                times["local folder"].append(load_s + first_token_s(c, f"local-{i}"))
                times["resolver (S3)"].append(first_token_s(c, f"lora-{manifests[i]}"))
                times["warm (floor)"].append(first_token_s(c, f"local-{i}"))
        result = {"benchmark": "cold_activation", "versions": run_metadata(),
                  "setup": {"base": "SmolLM2-135M-Instruct (bf16)", "rank": 16, "targets": "q,k,v,o",
                            "adapter_bytes": (fetched[0] / "adapter_model.safetensors").stat().st_size,
                            "store": "moto S3 server on this machine (HTTP)", "per_mode": n},
                  "modes": {mode: summary(values) for mode, values in times.items()},
                  "raw_s": times, "goal_s": GOAL_S}
        resolver, local_s = result["modes"]["resolver (S3)"], result["modes"]["local folder"]
        result["resolver_over_local_median"] = resolver["median_s"] / local_s["median_s"]
        result["meets_goal"] = resolver["p90_s"] <= GOAL_S
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(s3)

    print(f"\ncold activation, request to first token (n={n} adapters per mode, r=16, {result['setup']['adapter_bytes']:,}"
          " bytes of weights each)")
    print(f"{'mode':<16}{'median s':>10}{'p90 s':>10}{'max s':>10}")
    for mode, s in result["modes"].items():
        print(f"{mode:<16}{s['median_s']:>10.3f}{s['p90_s']:>10.3f}{s['max_s']:>10.3f}")
    print(f"resolver / local (medians): {result['resolver_over_local_median']:.2f}x; goal p90 <= {GOAL_S} s: "
          f"{'met' if result['meets_goal'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
