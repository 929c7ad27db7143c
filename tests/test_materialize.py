"""Adapter folders on disk are rebuilt from their verified blobs when they do not match them
(a file truncated or corrupted by a crash, a full disk or a hand edit), once per process."""

import io
from types import SimpleNamespace

from adapters.storage.blob_store import LocalBlobStore
from adapters.storage.materialize import AdapterMaterializer


def stored_adapter(blobs: LocalBlobStore, lora_factory):
    folder = lora_factory(33)
    config, _ = blobs.put_stream(io.BytesIO((folder / "adapter_config.json").read_bytes()))
    weights, _ = blobs.put_file(folder / "adapter_model.safetensors")
    return SimpleNamespace(config_sha256=config, weights_sha256=weights), folder


def test_a_corrupted_folder_is_rebuilt_after_a_restart(tmp_path, lora_factory):
    blobs = LocalBlobStore(tmp_path / "blobs")
    adapter, source = stored_adapter(blobs, lora_factory)
    built = AdapterMaterializer(blobs, tmp_path / "adapters").folder_for(adapter)
    weights = built / "adapter_model.safetensors"
    good = weights.read_bytes()
    assert good == (source / "adapter_model.safetensors").read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated on disk while the gateway was down

    again = AdapterMaterializer(blobs, tmp_path / "adapters").folder_for(adapter)  # a new process
    assert again == built and weights.read_bytes() == good
    assert not [p for p in (tmp_path / "adapters").iterdir() if p.name.startswith(".")]  # nothing left aside


def test_a_verified_folder_is_not_hashed_again_in_the_same_process(tmp_path, lora_factory, monkeypatch):
    import adapters.storage.materialize as materialize

    blobs = LocalBlobStore(tmp_path / "blobs")
    adapter, _ = stored_adapter(blobs, lora_factory)
    materializer = AdapterMaterializer(blobs, tmp_path / "adapters")
    materializer.folder_for(adapter)
    hashed = []
    monkeypatch.setattr(materialize, "_matches", lambda *a: hashed.append(a) or True)
    materializer.folder_for(adapter)
    assert hashed == []
