"""Workers fetch adapters themselves: a vLLM LoRA resolver (vllm/lora/resolver.py, registered by
our general plugin as vLLM's bundled filesystem resolver is) that turns a request for
``lora-<sha256 of a manifest>`` into a verified folder on the worker's own disk.

The manifest blob holds ``<config sha256>:<weights sha256>`` (adapters/registry/models.py,
``Adapter.manifest``). Every blob is hashed as it is copied (adapters/storage/), and a cached
folder is hashed again at each resolution, so a corrupt or truncated file is fetched again, and a
blob corrupt in the store is an error (500), never a half-loaded adapter. A missing manifest is
"no such adapter" (vLLM answers 404). The cache keeps at most ``max_bytes``, least recently
resolved folders of earlier runs going first (never one vLLM may still read). Runs inside the
worker: no gateway imports.
"""

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from adapters.storage.blob_store import BlobStore, LocalBlobStore
from adapters.storage.materialize import AdapterMaterializer

# Under vLLM's logger so that the lines land in the worker's log (vLLM gives only "vllm" a handler).
log = logging.getLogger("vllm.peftserve.blob_resolver")

STORE_ENV = "PEFTSERVE_WORKER_BLOB_STORE"  # JSON: {"kind": "local", "dir"} or {"kind": "s3", "bucket", ...}
CACHE_DIR_ENV = "PEFTSERVE_WORKER_CACHE_DIR"
CACHE_BYTES_ENV = "PEFTSERVE_WORKER_CACHE_BYTES"
RESOLVER_NAME = "peftserve-blob-store"
LORA_NAME = re.compile(r"^lora-([0-9a-f]{64})$")
MANIFEST = re.compile(r"^([0-9a-f]{64}):([0-9a-f]{64})$")


class ReadOnlyBlobs:
    """The part of a blob store a worker may use. Its credentials should allow no more (a
    read-only policy, settings.worker_s3_access_key_id); this keeps the worker's code from trying."""

    def __init__(self, store: BlobStore):
        self._store = store

    def exists(self, sha256: str) -> bool:
        return self._store.exists(sha256)

    def open(self, sha256: str):
        return self._store.open(sha256)

    def copy_to(self, sha256: str, dest: Path) -> None:
        self._store.copy_to(sha256, dest)


def blob_store_from_env(spec: dict) -> ReadOnlyBlobs:
    """The store a worker reads; it never writes or deletes."""
    if spec.get("kind") == "local":
        return ReadOnlyBlobs(LocalBlobStore(Path(spec["dir"])))
    if spec.get("kind") == "s3":
        import boto3

        from adapters.storage.s3_blob_store import S3BlobStore

        client = boto3.client("s3", endpoint_url=spec.get("endpoint_url"), region_name=spec.get("region"))
        return ReadOnlyBlobs(S3BlobStore(client, spec["bucket"], spec.get("prefix", "peftserve/blobs"),
                                         Path(spec["spool_dir"])))
    raise ValueError(f"{STORE_ENV}: unknown blob store {spec!r}")


class AdapterCache:
    """Verified adapter folders from the blob store, bounded in size.

    vLLM keeps every adapter name it resolved (until it is unloaded) and reloads one it evicted
    from memory from its folder, at any time, inside the engine loop: a folder handed to vLLM by
    this process must stay. So the bound removes only folders no resolution of this process
    handed out (left by an earlier run of the worker); past it, a warning says the disk is
    holding more than the bound until the worker restarts."""

    def __init__(self, blobs: "BlobStore | ReadOnlyBlobs", root: Path, max_bytes: int):
        self.blobs = blobs
        self.root = root
        self.max_bytes = max_bytes
        self.materializer = AdapterMaterializer(blobs, root)
        self._handed_out: set[str] = set()  # folder names vLLM may read again

    def folder(self, manifest_sha256: str) -> Path | None:
        """The adapter's folder, or None when the store has no such manifest."""
        if not self.blobs.exists(manifest_sha256):
            return None
        with self.blobs.open(manifest_sha256) as f:  # verified against its name as it is read
            manifest = MANIFEST.match(f.read().decode("ascii", errors="replace"))
        if manifest is None:
            raise ValueError(f"blob {manifest_sha256} is not an adapter manifest")
        folder = self.materializer.folder_for_digests(manifest[1], manifest[2], reverify=True)
        os.utime(folder)  # most recently resolved: pruned last
        self._handed_out.add(folder.name)
        self._prune()
        return folder

    def _prune(self) -> None:
        folders = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for folder in folders:
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            if total + size > self.max_bytes and folder.name not in self._handed_out:
                log.info("peftserve: adapter cache over %d bytes; removing %s", self.max_bytes, folder.name)
                shutil.rmtree(folder, ignore_errors=True)
            else:
                total += size
        if total > self.max_bytes:
            log.warning("peftserve: %d bytes of adapters this worker has loaded are on its disk, over the cache "
                        "bound of %d: they stay until the worker restarts (vLLM may reload them from there)",
                        total, self.max_bytes)


def make_resolver(cache: AdapterCache):
    """A vLLM LoRAResolver over ``cache`` (vLLM imported here: the module stays importable without it)."""
    import asyncio

    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver

    class BlobStoreResolver(LoRAResolver):
        async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
            name = LORA_NAME.match(lora_name)
            if name is None:
                return None
            started = time.perf_counter()
            folder = await asyncio.to_thread(cache.folder, name[1])
            if folder is None:
                return None
            log.info("peftserve: resolved %s from the blob store in %.3f s", lora_name, time.perf_counter() - started)
            # vLLM replaces the id with its own counter; the request type only insists on a positive one
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))

    return BlobStoreResolver()


def register_resolver() -> bool:
    """Register the resolver when the worker is told where the blob store is; False otherwise."""
    spec = os.environ.get(STORE_ENV)
    if not spec:
        return False
    from vllm.lora.resolver import LoRAResolverRegistry

    cache = AdapterCache(blob_store_from_env(json.loads(spec)), Path(os.environ[CACHE_DIR_ENV]),
                         int(os.environ.get(CACHE_BYTES_ENV, str(10 * 2**30))))
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, make_resolver(cache))
    return True
