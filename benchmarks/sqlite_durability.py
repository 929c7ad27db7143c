"""What SQLite's synchronous=FULL (the default: every commit durable) costs an upload against
NORMAL, in one run: the same SmolLM2 adapters uploaded alternately to two gateways (in-process,
no worker: the upload path up to the live check, which then waits for a worker), each with its
own SQLite registry in its own folder. Prints a table, writes benchmarks/results/sqlite_durability.json.

    .venv/bin/python -m benchmarks.sqlite_durability [--uploads 40]
"""

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from benchmarks.bench_support import CACHE, ROOT, demo_base_dir, make_adapters, run_metadata
from server.app import create_app
from server.settings import Settings

MODES = ("NORMAL", "FULL")


def gateway(root: Path, mode: str, base: Path, stack: contextlib.ExitStack) -> TestClient:
    # A worker address where nothing listens: the live check finds no worker at once and the
    # upload answers 202, so what is timed is the upload path itself (parse, validate, store, commit).
    settings = Settings(data_dir=root / mode, sqlite_synchronous=mode, admin_key="bench", max_upload_bytes=64 << 20,
                        worker_urls={"smollm2-135m@1": "http://127.0.0.1:9"}, worker_startup_timeout_s=0.01)
    engine = make_engine(settings.database_url, mode)
    upgrade_schema(engine)
    registry = Registry(make_session_factory(engine))
    from migration.base_versions.importer import import_base
    import_base(registry, settings.bases_dir, name="smollm2-135m", source=base)
    engine.dispose()
    client = TestClient(create_app(settings))
    stack.enter_context(client)  # lifespan on, one event loop for the whole run
    key = client.post("/admin/tenants", json={"name": "bench"}, headers={"Authorization": "Bearer bench"})
    client.headers["Authorization"] = f"Bearer {key.json()['api_key']}"
    return client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=40, help="uploads per mode")
    args = parser.parse_args()
    base = demo_base_dir(CACHE / "base-data")
    adapters = make_adapters(base, CACHE / "adapters-durability", args.uploads, rank=16, targets="attn")
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp, contextlib.ExitStack() as stack:
        clients = {m: gateway(Path(tmp), m, base, stack) for m in MODES}
        for i, folder in enumerate(adapters):
            files = [("file", (n, (folder / n).read_bytes())) for n in ("adapter_config.json",
                                                                       "adapter_model.safetensors")]
            order = MODES if i % 2 == 0 else MODES[::-1]  # alternate which mode goes first
            for mode in order:
                started = time.perf_counter()
                resp = clients[mode].post("/v1/adapters", data={"name": f"a{i}"}, files=files)
                times[mode].append(time.perf_counter() - started)
                assert resp.status_code == 202, resp.text
    medians = {m: statistics.median(times[m]) for m in MODES}
    ratios = [f / n for f, n in zip(times["FULL"], times["NORMAL"])]  # paired per adapter
    result = {"benchmark": "sqlite_durability", "uploads_per_mode": args.uploads, "median_s": medians,
              "paired_ratio_full_over_normal": {"median": statistics.median(ratios),
                                                 "p10": statistics.quantiles(ratios, n=10)[0],
                                                 "p90": statistics.quantiles(ratios, n=10)[-1]},
              "adapter": "SmolLM2-135M r=16 q,k,v,o", "meta": run_metadata()}
    print(f"{'mode':8} {'median upload (ms)':>20}")
    for m in MODES:
        print(f"{m:8} {medians[m] * 1000:20.1f}")
    r = result["paired_ratio_full_over_normal"]
    print(f"FULL / NORMAL, paired per adapter: median {r['median']:.3f} (p10 {r['p10']:.3f}, p90 {r['p90']:.3f})")
    out = ROOT / "benchmarks" / "results" / "sqlite_durability.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
