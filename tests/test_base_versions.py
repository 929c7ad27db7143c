"""Base-model versions: a continually trained v2 is accepted and its compatibility report shows
where it moved; a v2 of another architecture is refused with a report of what differs."""

import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from server.app import create_app
from tests.gateway_harness import ADMIN_KEY, gateway_settings
from tests.test_cli import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def perturbed_copy(base_dir, out_dir, *, ffn: float, attention: float, seed: int = 0):
    """A stand-in for continual training: relative noise of the given size per group."""
    shutil.copytree(base_dir, out_dir)
    weights = load_file(str(base_dir / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    for name, w in weights.items():
        scale = ffn if "mlp." in name else attention if "self_attn." in name else 0.0
        if scale:
            noise = torch.randn(w.shape, generator=gen)
            weights[name] = (w.float() + scale * w.float().norm() / noise.norm() * noise).to(w.dtype)
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, tiny_base_dir):
    root = tmp_path_factory.mktemp("versions")
    v2 = perturbed_copy(tiny_base_dir, root / "tiny-v2", ffn=0.05, attention=0.01)
    env = {"PEFTSERVE_DATA_DIR": str(root / "data")}
    assert run_cli("base", "import", str(tiny_base_dir), "--name", "tiny", env=env)[1]["version"] == 1
    code, out = run_cli("base", "import", str(v2), "--name", "tiny", env=env)
    assert code == 0 and out["ref"] == "tiny@2", out
    return root, env


def test_compatibility_report_shows_ffn_moved_more_than_attention(two_versions):
    root, env = two_versions
    code, out = run_cli("base", "compare", "tiny", "1", "2", "--out", str(root / "report"), env=env)
    assert code == 0, out
    groups = out["groups"]
    assert groups["ffn"]["relative_change"] == pytest.approx(0.05, rel=0.1)
    assert groups["attention"]["relative_change"] == pytest.approx(0.01, rel=0.1)
    assert groups["embeddings"]["relative_change"] == 0.0
    report = json.loads((root / "report" / "report.json").read_text())
    assert [r["layer"] for r in report["per_layer"]] == [0, 1]
    assert all(r["ffn"] > r["attention"] for r in report["per_layer"])
    down = next(m for m in report["modules"] if m["name"] == "model.layers.1.mlp.down_proj.weight")
    assert down["group"] == "ffn" and down["layer"] == 1
    assert (root / "report" / "report.png").read_bytes().startswith(PNG)


def test_compatibility_report_over_the_admin_api(two_versions):
    root, _ = two_versions
    # The CLI's registry in data/ (SQLite); no lifespan: no workers started.
    client = TestClient(create_app(gateway_settings(root / "data", database_url=None)))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    params = {"from_version": 1, "to_version": 2}
    report = client.get("/admin/bases/tiny/compatibility", params=params, headers=headers).json()
    assert report["from"] == "tiny@1" and report["groups"]["ffn"]["relative_change"] > 0.04
    png = client.get("/admin/bases/tiny/compatibility", params={**params, "format": "png"}, headers=headers)
    assert png.headers["content-type"] == "image/png" and png.content.startswith(PNG)
    missing = client.get("/admin/bases/tiny/compatibility", params={"from_version": 1, "to_version": 9},
                         headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "base_model_not_found"
    same = client.get("/admin/bases/tiny/compatibility", params={"from_version": 1, "to_version": 1},
                      headers=headers)
    assert same.status_code == 400


def test_a_different_architecture_is_refused_with_what_differs(two_versions, tmp_path):
    from tests.tiny_models import make_tiny_llama

    root, env = two_versions
    other = tmp_path / "other"
    make_tiny_llama(other, root / "tiny-v2")  # same tokenizer; then widen the FFN
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(other)
    config.intermediate_size = 384
    LlamaForCausalLM(config).save_pretrained(other, safe_serialization=True)
    AutoTokenizer.from_pretrained(root / "tiny-v2").save_pretrained(other)
    code, out = run_cli("base", "import", str(other), "--name", "tiny", env=env)
    assert code == 1
    message = out["error"]["message"]
    assert "architecture differs" in message and "mlp.down_proj.weight: shape [256, 512] -> [256, 384]" in message
    assert sorted(p.name for p in (root / "data" / "bases").iterdir()) == ["tiny"]  # no staging left
    assert sorted(p.name for p in (root / "data" / "bases" / "tiny").iterdir()) == ["v1", "v2"]


def test_import_over_the_admin_api_starts_serving_the_new_version(two_versions, tmp_path):
    root, _ = two_versions
    dead = "http://127.0.0.1:9"  # stand-in worker addresses: this test starts no engine
    settings = gateway_settings(root / "data", database_url=None, worker_urls={"tiny@2": dead, "tiny@3": dead})
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with TestClient(create_app(settings)) as client:
        missing = client.post("/admin/bases", json={"name": "tiny", "source": str(tmp_path / "nope")}, headers=headers)
        assert missing.status_code == 400 and "does not exist" in missing.json()["error"]["message"]
        taken = client.post("/admin/bases", json={"name": "tiny", "source": str(root / "tiny-v2"), "version": 2},
                            headers=headers)
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "base_version_exists"
        created = client.post("/admin/bases", json={"name": "tiny", "source": str(root / "tiny-v2")}, headers=headers)
        assert created.status_code == 201 and created.json()["ref"] == "tiny@3", created.text
        workers = {w["base_version"] for w in client.get("/admin/workers", headers=headers).json()}
        assert workers == {"tiny@3"}  # the newest version; tiny@2 has no adapter left to serve


def test_a_read_only_folder_is_registered_in_place(two_versions, tiny_base_dir, tmp_path):
    """As a fleet without shared disks does with the base baked into its image: no copy, the
    registry row names the folder itself, which stays untouched; a .gguf cannot be (it is converted)."""
    env = {"PEFTSERVE_DATA_DIR": str(tmp_path / "data")}
    image = tmp_path / "image-base"
    shutil.copytree(tiny_base_dir, image)
    image.chmod(0o555)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in image.iterdir())
    code, out = run_cli("base", "import", str(image), "--name", "baked", "--in-place", env=env)
    assert code == 0 and out["path"] == str(image.resolve()) and out["ref"] == "baked@1", out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in image.iterdir()) == before
    assert not (tmp_path / "data" / "bases" / "baked").exists()
    code, again = run_cli("base", "import", str(image), "--name", "baked", "--in-place", "--if-missing", env=env)
    assert code == 0 and again["created"] is False
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    code, out = run_cli("base", "import", str(tmp_path / "x.gguf"), "--name", "g", "--in-place", env=env)
    assert code == 1 and "in place" in out["error"]["message"]
    image.chmod(0o755)
