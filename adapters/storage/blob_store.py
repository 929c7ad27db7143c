"""Content-addressed blob storage: the interface and the local-filesystem implementation
(the S3-compatible one is in s3_blob_store.py).

Blobs are named by their sha256, so identical uploads are stored once. Writes go to a temp
file that is fsynced and renamed into place, so a crash leaves either no blob or a whole
one. Reads verify the hash, so a corrupted blob is never served.
"""

import contextlib
import hashlib
import io
import os
import tempfile
import time
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024


class BlobCorruptedError(Exception):
    """A stored blob no longer matches its hash (an internal error, not the client's)."""


class BlobStore(Protocol):
    def put_stream(self, source: BinaryIO) -> tuple[str, int]:
        """Store the bytes of ``source``; return (sha256, size)."""

    def put_file(self, path: Path) -> tuple[str, int]: ...

    def exists(self, sha256: str) -> bool: ...

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Write the blob to ``dest`` (atomically), verifying its hash on the way."""

    def open(self, sha256: str) -> BinaryIO:
        """Read a (small) blob whole, hash-verified."""

    def delete(self, sha256: str) -> None: ...

    def list_blobs(self) -> Iterator[tuple[str, float]]:
        """(sha256, modification time as a Unix timestamp) of every stored blob."""

    def clear_temp(self, older_than_s: float = 3600.0) -> None:
        """Drop temp files a crash left behind, older than ``older_than_s``."""


def check_digest(sha256: str) -> str:
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


class LocalBlobStore:
    def __init__(self, root: Path):
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        return self.root / check_digest(sha256)[:2] / sha256

    def put_stream(self, source: BinaryIO) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self._path(sha)
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                os.unlink(tmp_name)
            else:
                os.replace(tmp_name, final)
                _fsync_dir(final.parent)
            return sha, size
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    def put_file(self, path: Path) -> tuple[str, int]:
        with path.open("rb") as f:
            return self.put_stream(f)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def copy_to(self, sha256: str, dest: Path) -> None:
        with self._path(sha256).open("rb") as src:
            write_verified(iter(lambda: src.read(CHUNK), b""), sha256, dest, where="on disk")

    def open(self, sha256: str) -> BinaryIO:
        return verified(self._path(sha256).read_bytes(), sha256, where="on disk")

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def list_blobs(self) -> Iterator[tuple[str, float]]:
        for shard in self.root.iterdir():
            if len(shard.name) != 2 or not shard.is_dir():
                continue  # tmp/ and anything else that is not a shard
            for blob in shard.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    yield blob.name, blob.stat().st_mtime

    def clear_temp(self, older_than_s: float = 3600.0) -> None:
        """Drop half-written temp files a crash left (called at start-up). Only old ones: another
        gateway sharing this store may be writing the young ones right now."""
        remove_stale_files(self._tmp, older_than_s)


def write_verified(chunks: Iterable[bytes], sha256: str, dest: Path, *, where: str) -> None:
    """Write a blob's bytes to ``dest`` (a temp file renamed into place) only if they hash to
    ``sha256``; otherwise BlobCorruptedError and nothing at ``dest``. ``where``: for the message."""
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".tmp")
    with tmp.open("wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise BlobCorruptedError(f"blob {sha256} is corrupted {where}")
    os.replace(tmp, dest)


def verified(data: bytes, sha256: str, *, where: str) -> BinaryIO:
    """A whole small blob, if it hashes to ``sha256``."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BlobCorruptedError(f"blob {sha256} is corrupted {where}")
    return io.BytesIO(data)


def remove_stale_files(folder: Path, older_than_s: float) -> None:
    cutoff = time.time() - older_than_s
    for tmp in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
