"""Adapter folders on local disk for workers to load, built from verified blobs on demand.

A folder found on disk (left by an earlier run, or by another gateway sharing the folder) is
hashed against the adapter's sha256s once per process before it is handed to a worker, and
rebuilt if it does not match: a file corrupted or truncated on disk (a crash, a full disk, a
hand edit) is never loaded as the adapter.
"""

import hashlib
import os
import secrets
import shutil
import threading
from pathlib import Path

from adapters.registry.models import Adapter
from adapters.storage.blob_store import BlobStore


class AdapterMaterializer:
    def __init__(self, blobs: BlobStore, root: Path):
        self.blobs = blobs
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._verified: set[Path] = set()  # folders checked (or built) by this process
        self._lock = threading.Lock()

    def folder_path(self, adapter: Adapter) -> Path:
        return self.root / f"{adapter.config_sha256[:16]}-{adapter.weights_sha256[:16]}"

    def folder_for(self, adapter: Adapter) -> Path:
        """The adapter's folder, built from its blobs if it is not there yet."""
        folder = self.folder_path(adapter)
        if folder in self._verified and folder.is_dir():
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


def _sha256_of(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


def _matches(folder: Path, adapter: Adapter) -> bool:
    return (_sha256_of(folder / "adapter_config.json") == adapter.config_sha256
            and _sha256_of(folder / "adapter_model.safetensors") == adapter.weights_sha256)
