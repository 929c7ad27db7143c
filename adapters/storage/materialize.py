"""Adapter folders on local disk for workers to load, built from verified blobs on demand."""

import os
import secrets
import shutil
from pathlib import Path

from adapters.registry.models import Adapter
from adapters.storage.blob_store import BlobStore


class AdapterMaterializer:
    def __init__(self, blobs: BlobStore, root: Path):
        self.blobs = blobs
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def folder_path(self, adapter: Adapter) -> Path:
        return self.root / f"{adapter.config_sha256[:16]}-{adapter.weights_sha256[:16]}"

    def folder_for(self, adapter: Adapter) -> Path:
        """The adapter's folder, built from its blobs if it is not there yet."""
        folder = self.folder_path(adapter)
        if folder.is_dir():
            return folder
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
        return folder
