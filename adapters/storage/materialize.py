"""Adapter folders on local disk for workers to load, built from verified blobs on demand.

A folder found on disk (left by an earlier run, or by another gateway sharing the folder) is
hashed against the adapter's sha256s once per process before it is handed to a worker, and
rebuilt if it does not match: a file corrupted or truncated on disk (a crash, a full disk, a
hand edit) is never loaded as the adapter.
"""

import hashlib
import io
import os
import secrets
import shutil
import threading
from pathlib import Path

from typing import TYPE_CHECKING

from adapters.storage.blob_store import BlobStore

if TYPE_CHECKING:  # workers import this module (their adapter cache) without the registry
    from adapters.registry.models import Adapter


class AdapterMaterializer:
    def __init__(self, blobs: BlobStore, root: Path, *, workers_fetch: bool = False):
        self.blobs = blobs
        self.root = root
        self.workers_fetch = workers_fetch  # workers read the blob store themselves (by manifest)
        root.mkdir(parents=True, exist_ok=True)
        self._verified: set[Path] = set()  # folders checked (or built) by this process
        self._lock = threading.Lock()

    def for_worker(self, adapter: "Adapter") -> str:
        """What a worker is given to load the adapter: the folder path, or (``workers_fetch``) nothing,
        once the manifest blob the worker resolves the adapter's name through is in the store."""
        if self.workers_fetch:
            self.ensure_manifest(adapter)
            return ""
        return str(self.folder_for(adapter))

    def ensure_manifest(self, adapter: "Adapter") -> None:
        """The adapter's manifest blob, for workers that fetch adapters themselves (written at
        registration since it exists; adapters registered before get it on first use)."""
        if not self.blobs.exists(hashlib.sha256(adapter.manifest).hexdigest()):
            self.blobs.put_stream(io.BytesIO(adapter.manifest))

    def folder_path(self, adapter: "Adapter") -> Path:
        return self._folder_path(adapter.config_sha256, adapter.weights_sha256)

    def _folder_path(self, config_sha256: str, weights_sha256: str) -> Path:
        return self.root / f"{config_sha256[:16]}-{weights_sha256[:16]}"

    def folder_for(self, adapter: "Adapter") -> Path:
        """The adapter's folder, built from its blobs if it is not there yet."""
        return self.folder_for_digests(adapter.config_sha256, adapter.weights_sha256)

    def folder_for_digests(self, config_sha256: str, weights_sha256: str, *, reverify: bool = False) -> Path:
        """The same by digests; ``reverify``: hash the files again even if this process did before
        (a worker resolving an adapter: its cache may have been damaged since)."""
        adapter = _Digests(config_sha256, weights_sha256)
        folder = self._folder_path(config_sha256, weights_sha256)
        if folder in self._verified and folder.is_dir() and not reverify:
            return folder
        if folder.is_dir():
            if _matches(folder, adapter):
                with self._lock:
                    self._verified.add(folder)
                return folder
            # Move it aside first (atomic), so no worker is handed a half-removed folder.
            doomed = self.root / f".bad-{folder.name}.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                os.rename(folder, doomed)
            except OSError:
                pass  # another process moved it already
            shutil.rmtree(doomed, ignore_errors=True)
        # Unique even across gateways on several machines sharing this folder.
        staging = self.root / f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self.blobs.copy_to(adapter.config_sha256, staging / "adapter_config.json")
        self.blobs.copy_to(adapter.weights_sha256, staging / "adapter_model.safetensors")
        try:
            os.rename(staging, folder)  # atomic: a worker never sees a half-written folder
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another writer won the race
            if not _matches(folder, adapter):
                raise OSError(f"adapter folder {folder} does not match its blobs after rebuilding") from None
        with self._lock:
            self._verified.add(folder)
        return folder


class _Digests:
    def __init__(self, config_sha256: str, weights_sha256: str):
        self.config_sha256, self.weights_sha256 = config_sha256, weights_sha256


def _sha256_of(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


def _matches(folder: Path, adapter: "Adapter | _Digests") -> bool:
    return (_sha256_of(folder / "adapter_config.json") == adapter.config_sha256
            and _sha256_of(folder / "adapter_model.safetensors") == adapter.weights_sha256)
