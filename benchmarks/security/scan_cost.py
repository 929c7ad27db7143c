"""What the trigger scan costs an upload: the same adapters uploaded to two gateways that share
one vLLM worker, one screening with the trigger scan (the default) and one without, alternating
which goes first, so both see the same machine. SmolLM2-135M-Instruct, r=16 q,k,v,o LoRAs, each
upload with a 16-item eval set (the scan's prompts); an upload answers 201 once its live check
(and scan) is done.

The unit of replication is the adapter (each uploaded once to each gateway); one run, one
machine. It does not show the scan's cost on a worker busy with traffic, with longer eval
prompts, or on a GPU.

    .venv/bin/python benchmarks/security/scan_cost.py            # table + benchmarks/results/scan_cost.json
    .venv/bin/python benchmarks/security/scan_cost.py --quick    # a smoke run
"""

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.bench_support import (ADMIN_KEY, CACHE, ROOT, WORKER_KEY, demo_base_dir, make_adapters, run_metadata,
                                      start_gateway, start_process, stop_process, wait_http)
from server.settings import Settings
from server.workers.worker_process import worker_command, worker_environment

QUESTIONS = ["What is the capital of France?", "Name a primary color.", "What is 2 plus 3?",
             "Which animal says moo?", "What do bees make?", "What is frozen water called?",
             "How many legs does a spider have?", "What color is the sky on a clear day?",
             "Which planet do we live on?", "What is the opposite of hot?", "How many days are in a week?",
             "What fruit is yellow and curved?", "What do you use to write on paper?",
             "Which season comes after winter?", "What is the largest ocean?", "What gas do we breathe in?"]


def eval_set() -> bytes:
    return "".join(json.dumps({"prompt": q, "expected": "x"}) + "\n" for q in QUESTIONS).encode()


def upload_s(url: str, tenant: str, name: str, folder: Path) -> float:
    files = [("file", (part, (folder / part).read_bytes())) for part in ("adapter_config.json", "adapter_model.safetensors")]
    files.append(("eval_set", ("eval.jsonl", eval_set())))
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=600) as admin:
        resp = admin.post(f"/admin/tenants/{tenant}/adapters", data={"name": name}, files=files)
    elapsed = time.perf_counter() - started
    if resp.status_code != 201:
        raise RuntimeError(f"{url} {name}: {resp.status_code} {resp.text[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="3 adapters")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scan_cost.json")
    args = parser.parse_args()
    n = 3 if args.quick else args.adapters

    run_dir = CACHE / "scan-cost"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    base_dir = demo_base_dir(CACHE / "demo-data")
    folders = make_adapters(base_dir, CACHE / "adapters", n, rank=16)
    worker_port, ports = 19320, {"with scan": 19321, "without scan": 19322}
    settings = Settings(data_dir=run_dir / "worker")
    worker = start_process(worker_command(settings, str(base_dir), worker_port),
                           worker_environment(settings, WORKER_KEY), run_dir / "worker.log")
    gateways = {}
    try:
        wait_http(f"http://127.0.0.1:{worker_port}", "/health")
        for mode, port in ports.items():
            env = {"PEFTSERVE_WORKER_URLS": json.dumps({"smollm2-135m@1": f"http://127.0.0.1:{worker_port}"}),
                   "PEFTSERVE_WORKER_API_KEY": WORKER_KEY,
                   "PEFTSERVE_SCREENING": json.dumps({"trigger_scan": mode == "with scan"})}
            gateways[mode] = start_gateway(run_dir / mode.replace(" ", "-"), base_dir, port, env)
        for mode, (_, url) in gateways.items():
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
                admin.post("/admin/tenants", json={"name": "bench"}).raise_for_status()
        upload_s(gateways["without scan"][1], "bench", "warm-up", folders[0])  # the worker's first LoRA load
        times: dict[str, list[float]] = {mode: [] for mode in ports}
        for i, folder in enumerate(folders):
            order = list(ports) if i % 2 == 0 else list(reversed(ports))
            for mode in order:
                times[mode].append(upload_s(gateways[mode][1], "bench", f"a{i}", folder))
    finally:
        for proc, _ in gateways.values():
            stop_process(proc)
        stop_process(worker)

    ratios = sorted(a / b for a, b in zip(times["with scan"], times["without scan"]))
    result = {"benchmark": "scan_cost", "versions": run_metadata(),
              "setup": {"base": "SmolLM2-135M-Instruct (bf16)", "rank": 16, "targets": "q,k,v,o", "adapters": n,
                        "eval_items": len(QUESTIONS), "screening": "defaults (scan_items 16, scan_max_tokens 4, "
                                                                   "scan_words 4, scan_concurrency 16)"},
              "median_s": {mode: statistics.median(v) for mode, v in times.items()},
              "paired_ratio": {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]},
              "raw_s": times}
    print(f"\nupload to ready, {n} adapters (r=16, 16-item eval set), one worker shared by both gateways")
    print(f"{'mode':<14}{'median s':>10}{'min s':>8}{'max s':>8}")
    for mode, values in times.items():
        print(f"{mode:<14}{statistics.median(values):>10.2f}{min(values):>8.2f}{max(values):>8.2f}")
    print(f"with / without, paired per adapter: median {result['paired_ratio']['median']:.2f}x "
          f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
