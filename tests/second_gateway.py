"""A second gateway *process* on its own data folder, using the session's vLLM worker as an
external worker: for tests that kill and restart a gateway without starting another engine."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from migration.base_versions.importer import import_base
from tests.gateway_harness import ADMIN_KEY, JOB_LEASE_S, WORKER_API_KEY, free_port, fresh_database_url, wait_until_ready


@dataclass
class SecondGateway:
    env: dict[str, str]
    url: str
    data_dir: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # kept for the failure message of the test
            self.proc = subprocess.Popen([sys.executable, "-m", "server.cli.main", "serve"],
                                         env={**os.environ, "PEFTSERVE_WORKER_API_KEY": WORKER_API_KEY, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_until_ready(self.url, 120):
            self.kill()
            raise TimeoutError("second gateway did not become ready")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "gateway.log"

    def log_tail(self, lines: int = 40) -> str:
        """The end of this gateway's log, for assertion messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def kill_gateway_only(self) -> None:
        """SIGKILL the gateway process alone, as the kernel's OOM killer would: its children must
        notice by themselves."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)

    def tenant_key(self, name: str) -> str:
        return httpx.post(f"{self.url}/admin/tenants", json={"name": name},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["api_key"]


def second_gateway(gateway, tiny_base_dir: Path, data_dir: Path,
                   worker_url: str | list[str] | None = None) -> SecondGateway:
    """Import the tiny base into ``data_dir`` and start a gateway process on it, in front of the
    session's worker (or of ``worker_url``: one URL or several)."""
    database_url = fresh_database_url(data_dir)
    engine = make_engine(database_url)
    upgrade_schema(engine)
    import_base(Registry(make_session_factory(engine)), data_dir / "bases", name="tiny", source=tiny_base_dir)
    engine.dispose()
    port = free_port()
    env = {"PEFTSERVE_DATA_DIR": str(data_dir), "PEFTSERVE_DATABASE_URL": database_url, "PEFTSERVE_PORT": str(port), "PEFTSERVE_ADMIN_KEY": ADMIN_KEY,
           "PEFTSERVE_JOB_LEASE_S": str(JOB_LEASE_S), "PEFTSERVE_WORKER_URLS": json.dumps({"tiny@1": worker_url or gateway.worker()["url"]})}
    second = SecondGateway(env, f"http://127.0.0.1:{port}", data_dir)
    second.start()
    return second
