"""Workers that fetch adapters from the blob store themselves (server/workers/vllm_plugin/
blob_resolver.py): the adapter cache as a unit, then a real gateway on the S3-compatible server
whose worker resolves every adapter by name, with no folder written by the gateway."""

import hashlib
import io
import time

import httpx
import pytest

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.models import adapter_manifest
from adapters.registry.registry import Registry
from adapters.storage.blob_store import BlobCorruptedError, LocalBlobStore
from migration.base_versions.importer import import_base
from server.workers.vllm_plugin.blob_resolver import AdapterCache
from tests.gateway_harness import WORKER_API_KEY, gateway_settings, start_gateway
from tests.test_uploads import folder_files


def stored(blobs: LocalBlobStore, folder) -> str:
    config, _ = blobs.put_stream(io.BytesIO((folder / "adapter_config.json").read_bytes()))
    weights, _ = blobs.put_file(folder / "adapter_model.safetensors")
    manifest, _ = blobs.put_stream(io.BytesIO(adapter_manifest(config, weights)))
    return manifest


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_verifies_refetches_and_bounds(tmp_path, lora_factory):
    blobs = LocalBlobStore(tmp_path / "store")
    first, second = lora_factory(91), lora_factory(92)
    m1, m2 = stored(blobs, first), stored(blobs, second)
    cache = AdapterCache(blobs, tmp_path / "cache", max_bytes=10**9)
    folder = cache.folder(m1)
    assert sha(folder / "adapter_model.safetensors") == sha(first / "adapter_model.safetensors")

    (folder / "adapter_model.safetensors").write_bytes(b"damaged on disk")  # the worker's own disk
    again = cache.folder(m1)  # resolved again: hashed again, fetched again
    assert sha(again / "adapter_model.safetensors") == sha(first / "adapter_model.safetensors")

    assert cache.folder("0" * 64) is None  # no such manifest: vLLM answers "does not exist"
    size = sum(f.stat().st_size for f in folder.iterdir())
    small = AdapterCache(blobs, tmp_path / "small", max_bytes=size + 10)
    first_folder = small.folder(m1)
    time.sleep(0.01)
    small.folder(m2)  # over the bound, but vLLM may reload m1 from its folder at any time: it stays
    assert first_folder.exists()
    restarted = AdapterCache(blobs, tmp_path / "small", max_bytes=size + 10)  # the worker restarted
    restarted.folder(m2)  # m1 is an earlier run's folder nobody was handed this time: it goes
    assert not first_folder.exists() and len([p for p in (tmp_path / "small").iterdir() if not p.name.startswith(".")]) == 1

    weights = sha(first / "adapter_model.safetensors")
    next(p for p in (tmp_path / "store").rglob(weights) if p.is_file()).write_bytes(b"corrupt in the store")
    with pytest.raises(BlobCorruptedError):  # an error, never a half-loaded adapter
        AdapterCache(blobs, tmp_path / "fresh", max_bytes=10**9).folder(m1)
    assert not any((tmp_path / "fresh").rglob("*.safetensors"))


@pytest.fixture(scope="module")
def fetching_gateway(s3, tiny_base_dir, tmp_path_factory):
    """A gateway on the S3-compatible server whose own worker fetches adapters from it."""
    data = tmp_path_factory.mktemp("fetching")
    env = s3.gateway_env(s3.new_bucket())
    settings = gateway_settings(data, database_url=None, blob_store="s3", s3_bucket=env["PEFTSERVE_S3_BUCKET"],
                                s3_endpoint_url=s3.url, workers_fetch_adapters=True)
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    import_base(Registry(make_session_factory(engine)), settings.bases_dir, name="tiny", source=tiny_base_dir)
    engine.dispose()
    import os

    saved = {k: os.environ.get(k) for k in env if k.startswith("AWS_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})  # the worker inherits them
    gw = start_gateway(settings)
    yield gw
    gw.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_a_fetching_worker_serves_adapters_the_gateway_never_wrote_to_disk(fetching_gateway, gateway, lora_factory):
    fg = fetching_gateway
    adapter = lora_factory(93)
    added = fg.add_adapter("fetch-co", "fetched", adapter)
    assert added.status_code == 201, added.text
    assert gateway.add_adapter("fetch-ref", "by-path", adapter).status_code == 201  # the session's worker loads a folder
    body = {"prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0}
    with fg.client(fg.tenant_key("fetch-co")) as c:
        fetched = c.post("/v1/completions", json={**body, "model": "fetched"})
    with gateway.client(gateway.tenant_key("fetch-ref")) as c:
        by_path = c.post("/v1/completions", json={**body, "model": "by-path"})
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["choices"][0]["text"] == by_path.json()["choices"][0]["text"]  # same weights, same answer
    assert not any(fg.settings.adapters_dir.rglob("*.safetensors"))  # the gateway wrote no folder for the worker
    cached = list((fg.settings.data_dir / "worker-cache").rglob("adapter_model.safetensors"))
    assert len(cached) == 1 and sha(cached[0]) == sha(adapter / "adapter_model.safetensors")

    # The worker's cached copy is damaged; the worker unloads the adapter (as vLLM may): the next
    # request resolves it again, finds the damage, fetches and verifies it, and answers the same.
    cached[0].write_bytes(b"damaged")
    worker = fg.worker()
    name = next(iter(fg.app.state.services.pool.all_slots[0].residency.resident))
    unloaded = httpx.post(f"{worker['url']}/v1/unload_lora_adapter", json={"lora_name": name},
                          headers={"Authorization": f"Bearer {WORKER_API_KEY}"})
    assert unloaded.status_code == 200, unloaded.text
    with fg.client(fg.tenant_key("fetch-co")) as c:
        again = c.post("/v1/completions", json={**body, "model": "fetched"})
    assert again.status_code == 200 and again.json()["choices"][0]["text"] == fetched.json()["choices"][0]["text"]
    assert sha(cached[0]) == sha(adapter / "adapter_model.safetensors")


def test_workers_get_their_own_read_only_credentials_and_a_read_only_store(tmp_path, monkeypatch):
    import json

    from pydantic import ValidationError

    from server.workers.vllm_plugin.blob_resolver import STORE_ENV, blob_store_from_env
    from server.workers.worker_process import worker_environment
    from server.settings import Settings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "gateway-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gateway-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "gateway-token")
    common = dict(data_dir=tmp_path, blob_store="s3", s3_bucket="b", s3_endpoint_url="http://127.0.0.1:9",
                  workers_fetch_adapters=True)
    settings = Settings(**common, worker_s3_access_key_id="reader", worker_s3_secret_access_key="reader-secret")
    env = worker_environment(settings, WORKER_API_KEY, tmp_path / "cache")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("reader", "reader-secret")
    assert "AWS_SESSION_TOKEN" not in env and "gateway-secret" not in json.dumps(env)
    store = blob_store_from_env(json.loads(env[STORE_ENV]))  # builds a client; sends nothing
    assert not any(hasattr(store, write) for write in ("put_stream", "put_file", "delete", "clear_temp"))
    inherited = worker_environment(Settings(**common), WORKER_API_KEY, tmp_path / "cache")
    assert inherited["AWS_ACCESS_KEY_ID"] == "gateway-key"  # unset: the gateway's own (documented)
    with pytest.raises(ValidationError, match="go together"):
        Settings(**common, worker_s3_access_key_id="reader")
