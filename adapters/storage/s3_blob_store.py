"""Content-addressed blobs in an S3-compatible bucket, for gateways on several machines.

The same guarantees as the local store: a blob is hashed while it is spooled to a local temp
file, then uploaded under its sha256 with one PUT (S3 makes an object visible whole or not at
all, so a crash leaves no half blob), and every read is verified against the hash.
"""

import hashlib
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import BinaryIO

from botocore.exceptions import ClientError

from adapters.storage.blob_store import CHUNK, check_digest, remove_stale_files, verified, write_verified


class S3BlobStore:
    def __init__(self, client, bucket: str, prefix: str, spool_dir: Path):
        self.client = client  # a boto3 S3 client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._tmp = spool_dir
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _key(self, sha256: str) -> str:
        name = f"{check_digest(sha256)[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put_stream(self, source: BinaryIO) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with tempfile.TemporaryFile(dir=self._tmp) as spool:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                spool.write(chunk)
            sha = digest.hexdigest()
            if not self.exists(sha):
                spool.seek(0)
                self.client.put_object(Bucket=self.bucket, Key=self._key(sha), Body=spool, ContentLength=size,
                                       Metadata={"sha256": sha})
        return sha, size

    def put_file(self, path: Path) -> tuple[str, int]:
        with path.open("rb") as f:
            return self.put_stream(f)

    def exists(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def copy_to(self, sha256: str, dest: Path) -> None:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        write_verified(body.iter_chunks(CHUNK), sha256, dest, where=f"in s3://{self.bucket}")

    def open(self, sha256: str) -> BinaryIO:
        data = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"].read()
        return verified(data, sha256, where=f"in s3://{self.bucket}")

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(sha256))

    def list_blobs(self) -> Iterator[tuple[str, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "")
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if len(name) == 64:
                    yield name, item["LastModified"].timestamp()

    def clear_temp(self, older_than_s: float = 3600.0) -> None:
        remove_stale_files(self._tmp, older_than_s)
