"""Run a real gateway (with its real vLLM worker) in a background thread for the test session."""

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from server.app import create_app
from server.http_server import uvicorn_config
from adapters.screening.policy import ScreeningPolicy
from server.settings import Settings

ADMIN_KEY = "psa-test-admin-key"
# Every test gateway presents this to its workers, so that a second gateway can use the first's.
WORKER_API_KEY = "psa-test-worker-key"
WORKER_HEADERS = {"Authorization": f"Bearer {WORKER_API_KEY}"}
JOB_LEASE_S = 3.0  # a killed gateway's jobs are taken over after this long


def wait_until_http(url: str, timeout_s: float) -> bool:
    """Poll ``url`` until it answers 200; False if it did not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return False


def wait_until_ready(url: str, timeout_s: float) -> bool:
    """Poll ``url``/ready?all=true (every served base version has a ready worker) until it
    answers 200; False if it did not within ``timeout_s``."""
    return wait_until_http(f"{url}/ready?all=true", timeout_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    url: str
    settings: Settings
    app: object
    server: uvicorn.Server
    thread: threading.Thread
    _tenant_keys: dict[str, str] = field(default_factory=dict)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def tenant_key(self, tenant: str) -> str:
        """Create the tenant once per session and return its first key."""
        if tenant not in self._tenant_keys:
            with self.admin() as admin:
                resp = admin.post("/admin/tenants", json={"name": tenant})
                resp.raise_for_status()
                self._tenant_keys[tenant] = resp.json()["api_key"]
        return self._tenant_keys[tenant]

    def add_adapter(self, tenant: str, name: str, folder: Path, *, eval_set: bytes | None = None,
                    **form) -> httpx.Response:
        """Upload the PEFT folder as ``tenant``'s adapter ``name`` (the tenant is made if new)."""
        self.tenant_key(tenant)
        files = [("file", (part, (folder / part).read_bytes()))
                 for part in ("adapter_config.json", "adapter_model.safetensors")]
        if eval_set is not None:
            files.append(("eval_set", ("eval.jsonl", eval_set)))
        with self.admin() as admin:
            return admin.post(f"/admin/tenants/{tenant}/adapters", data={"name": name, **form}, files=files)

    def worker(self) -> dict:
        with self.admin() as admin:
            return admin.get("/admin/workers").json()[0]

    def wait_ready(self, timeout_s: float = 300) -> None:
        if not wait_until_ready(self.url, timeout_s):
            raise TimeoutError(f"gateway not ready after {timeout_s}s; worker log: {self.settings.logs_dir}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def start_gateway(settings: Settings) -> Gateway:
    app = create_app(settings)
    config = uvicorn_config(app, settings, host="127.0.0.1", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    gateway = Gateway(f"http://127.0.0.1:{settings.port}", settings, app, server, thread)
    gateway.wait_ready()
    return gateway


def fresh_database_url(data_dir: Path) -> str:
    """A fresh registry database for one gateway: SQLite in ``data_dir``, or with
    PEFTSERVE_TEST_DATABASE=postgresql a new database on the session's PostgreSQL server."""
    if os.environ.get("PEFTSERVE_TEST_DATABASE", "sqlite") == "postgresql":
        from tests.postgres_server import shared_postgres

        return shared_postgres().new_database()
    return f"sqlite:///{data_dir / 'registry.db'}"



def gateway_settings(data_dir: Path, **overrides) -> Settings:
    values = dict(
        data_dir=data_dir, port=free_port(), worker_port_start=free_port(), admin_key=ADMIN_KEY,
        max_resident_adapters=3, max_loras_per_batch=2, max_lora_rank=16, worker_max_model_len=512,
        # In-process engine core: a tiny model starts in about 7 s instead of about 22 (measured here).
        worker_env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
        worker_health_interval_s=0.5, worker_restart_backoff_max_s=2.0,
        max_upload_bytes=8 * 1024 * 1024, tenant_max_adapters=20, job_lease_s=JOB_LEASE_S,
        worker_api_key=WORKER_API_KEY,
        # The trigger scan runs on every upload and promotion in the suite, on 4 prompts to keep it
        # cheap; tests/test_screening.py uses more.
        screening=ScreeningPolicy(scan_items=4),
    )
    if "database_url" not in overrides:  # a registry the CLI made in data_dir is SQLite: pass None
        values["database_url"] = fresh_database_url(data_dir)
    values.update(overrides)
    return Settings(**values)
