"""A private PostgreSQL server for the test session: its own cluster in a temp folder, on a free
loopback port, trust auth, fsync off; started and stopped by the tests (never a system service)."""

import atexit
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.gateway_harness import free_port

USER = "peftserve"


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `make test` (deploy/install-test-services.sh)")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self):
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="peftserve-pg-"))
        self.port = free_port()
        # initdb refuses to run as root: run the server as Debian's postgres user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres")
        self._databases = 0

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> "PostgresServer":
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "start")
        return self

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        self._databases += 1
        name = f"peftserve_{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


_shared: PostgresServer | None = None


def shared_postgres() -> PostgresServer:
    """The session's one PostgreSQL server, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        _shared = PostgresServer().start()
        atexit.register(_shared.stop)
    return _shared
