"""Both blob stores (local folder, S3-compatible bucket) keep the same promises: content
addressing with deduplication, whole-or-nothing writes, hash-verified reads, deletion."""

import hashlib
import io

import pytest

from adapters.storage.blob_store import BlobCorruptedError, LocalBlobStore
from adapters.storage.s3_blob_store import S3BlobStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        store = LocalBlobStore(tmp_path / "blobs")
        store.corrupt = lambda sha: store._path(sha).write_bytes(b"bit rot")
        return store
    s3 = request.getfixturevalue("s3")
    client, bucket = s3.client(), s3.new_bucket()
    store = S3BlobStore(client, bucket, "peftserve/blobs", tmp_path / "spool")
    store.corrupt = lambda sha: client.put_object(Bucket=bucket, Key=store._key(sha), Body=b"bit rot")
    return store


def test_content_addressed_deduplicated_and_verified(store, tmp_path):
    data = b"adapter weights " * 100_000  # spans several read chunks
    sha, size = store.put_stream(io.BytesIO(data))
    assert sha == hashlib.sha256(data).hexdigest() and size == len(data)
    assert store.put_stream(io.BytesIO(data)) == (sha, size)  # stored once
    source = tmp_path / "file.bin"
    source.write_bytes(b"small")
    small, _ = store.put_file(source)
    assert store.exists(sha) and store.exists(small)
    assert store.open(sha).read() == data
    store.copy_to(sha, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert not list(tmp_path.glob("*.tmp"))

    store.corrupt(small)
    with pytest.raises(BlobCorruptedError):
        store.open(small)
    with pytest.raises(BlobCorruptedError):
        store.copy_to(small, tmp_path / "bad.bin")
    assert not (tmp_path / "bad.bin").exists() and not list(tmp_path.glob("*.tmp"))

    store.delete(sha)
    assert not store.exists(sha)
    store.delete(sha)  # deleting twice is fine
    store.clear_temp()
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")
