"""A vLLM worker process of the tiny base that no gateway supervises (an "external" worker, as
on another machine): started with the same command line and environment the gateway uses."""

import os
import signal
import subprocess
from pathlib import Path

from server.workers.worker_process import worker_command, worker_environment
from server.settings import Settings
from tests.gateway_harness import WORKER_API_KEY, free_port, wait_until_http


class StandaloneWorker:
    """``cache_dir``: with ``settings.workers_fetch_adapters``, the worker fetches adapters from the
    blob store into this folder of its own; ``env``: added to its environment (the store's credentials)."""

    def __init__(self, settings: Settings, model_path: Path, log_path: Path, *, cache_dir: Path | None = None,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache_dir = cache_dir
        environment = {**worker_environment(settings, settings.worker_api_key or WORKER_API_KEY, cache_dir), **(env or {})}
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(worker_command(settings, str(model_path), self.port), env=environment,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        if not wait_until_http(f"{self.url}/health", 300):
            self.kill()
            raise TimeoutError(f"standalone worker did not start; see {log_path}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
