"""The ``peftserve`` CLI, run as a real subprocess: base import of the demo GGUF, and the admin
commands against the session's gateway. Every command's ``--json`` output is one JSON object."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.gateway_harness import ADMIN_KEY


def run_cli(*args: str, env: dict[str, str]) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "server.cli.main", *args, "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr[-2000:])
    return proc.returncode, json.loads(lines[0])


@pytest.fixture()
def gateway_env(gateway):
    return {"PEFTSERVE_DATA_DIR": str(gateway.settings.data_dir), "PEFTSERVE_PORT": str(gateway.settings.port),
            "PEFTSERVE_ADMIN_KEY": ADMIN_KEY}


def test_demo_base_import_is_a_real_model(tmp_path):
    env = {"PEFTSERVE_DATA_DIR": str(tmp_path / "data")}
    code, out = run_cli("base", "import", "--demo", env=env)
    assert code == 0 and out["ref"] == "smollm2-135m@1" and out["created"] is True
    folder = Path(out["path"])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert f.get_tensor(keys[0]).dtype == torch.bfloat16
    assert sum(".mlp.down_proj.weight" in k for k in keys) == 30

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    out_ids = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out_ids[0, ids["input_ids"].shape[1]:])

    code, again = run_cli("base", "import", "--demo", "--if-missing", env=env)
    assert code == 0 and again["created"] is False and again["ref"] == "smollm2-135m@1"


def test_admin_commands_drive_the_gateway(gateway, gateway_env, lora_factory):
    code, tenant = run_cli("tenant", "create", "cli-corp", env=gateway_env)
    assert code == 0 and tenant["tenant"] == "cli-corp" and tenant["api_key"].startswith("psk-")
    code, key = run_cli("key", "create", "--tenant", "cli-corp", env=gateway_env)
    assert code == 0 and key["api_key"] != tenant["api_key"]

    folder = lora_factory(31)
    code, added = run_cli("adapter", "add", str(folder), "--tenant", "cli-corp", "--name", "helper", env=gateway_env)
    assert code == 0 and added["status"] == "ready" and added["version"] == 1
    code, again = run_cli("adapter", "add", str(folder), "--tenant", "cli-corp", "--name", "helper", env=gateway_env)
    assert code == 0 and again["version"] == 2 and again["sha256"] == added["sha256"]
    code, listing = run_cli("adapter", "list", "--tenant", "cli-corp", env=gateway_env)
    assert [(a["name"], a["version"]) for a in listing["adapters"]] == [("helper", 1), ("helper", 2)]

    code, error = run_cli("tenant", "create", "cli-corp", env=gateway_env)
    assert code == 1 and error["error"]["status"] == 409
    code, workers = run_cli("workers", env=gateway_env)
    assert code == 0 and workers["workers"][0]["base_version"] == "tiny@1"

    with gateway.client(key["api_key"]) as c:
        resp = c.post("/v1/completions", json={"model": "helper@1", "prompt": "Hi", "max_tokens": 4})
        assert resp.status_code == 200 and resp.json()["model"] == "helper@1"


def test_adapter_upload_through_tenant_api(gateway, gateway_env, lora_factory, tmp_path):
    key = gateway.tenant_key("cli-uploader")
    env = {**gateway_env, "PEFTSERVE_API_KEY": key}
    folder = lora_factory(32)
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text('{"prompt": "Hi", "expected": "Hello"}\n')
    code, out = run_cli("adapter", "upload", str(folder), "--name", "cli-up", "--trained-with", "lora",
                        "--eval-set", str(eval_file), env=env)
    assert code == 0 and out["status"] == "ready" and out["eval_items"] == 1, out

    import tarfile
    archive = tmp_path / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="adapter")
    code, out = run_cli("adapter", "upload", str(archive), "--name", "cli-up", env=env)
    assert code == 0 and out["version"] == 2

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 64, "target_modules": ["q_proj"]}')
    (broken / "adapter_model.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes())
    code, out = run_cli("adapter", "upload", str(broken), "--name", "cli-bad", env=env)
    assert code == 1 and out["error"]["status"] == 422 and "rank_too_large" in out["error"]["message"]


def test_train_command_writes_a_lora_and_its_eval_set(tiny_base_dir, tmp_path):
    from tests.test_trans_peft import reverse_task

    data = tmp_path / "train.jsonl"
    data.write_bytes(reverse_task(20))
    code, out = run_cli("train", str(data), "--base-dir", str(tiny_base_dir), "--out", str(tmp_path / "run"),
                        "--rank", "4", "--max-steps", "3", "--p-m", "0.2", "--p-c", "0.2", env={})
    assert code == 0 and out["method"] == "trans-peft" and out["steps"] == 3, out
    assert (Path(out["adapter_dir"]) / "adapter_model.safetensors").is_file()
    assert len(Path(out["eval_set"]).read_text().splitlines()) == 2
    assert out["hyperparameters"]["p_m"] == 0.2

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    code, out = run_cli("train", str(bad), "--base-dir", str(tiny_base_dir), "--out", str(tmp_path / "bad"), env={})
    assert code == 1 and "line 1" in out["error"]["message"]


def test_train_command_continues_an_adapter(tiny_base_dir, tmp_path):
    """A BeamLoRA adapter trained by the CLI, then continued: --from-adapter starts from the folder's weights (with a vanishing learning rate the result
    is that adapter), takes its rank and targets, and refuses another rank."""
    from safetensors.torch import load_file

    from tests.test_trans_peft import reverse_task

    data = tmp_path / "train.jsonl"
    data.write_bytes(reverse_task(20))
    code, first = run_cli("train", str(data), "--base-dir", str(tiny_base_dir), "--out", str(tmp_path / "first"),
                          "--method", "beamlora", "--rank", "4", "--max-steps", "3", "--learning-rate", "1e-2", env={})
    assert code == 0 and first["method"] == "beamlora" and "rounds" in first["training"], first
    code, more = run_cli("train", str(data), "--base-dir", str(tiny_base_dir), "--out", str(tmp_path / "more"),
                         "--from-adapter", first["adapter_dir"], "--method", "lora", "--max-steps", "1",
                         "--learning-rate", "1e-12", env={})
    assert code == 0 and more["hyperparameters"]["rank"] == 4 and more["continued_from_adapter"], more
    a = load_file(str(Path(first["adapter_dir"]) / "adapter_model.safetensors"))
    b = load_file(str(Path(more["adapter_dir"]) / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # a trained start, not zeros
    code, out = run_cli("train", str(data), "--base-dir", str(tiny_base_dir), "--out", str(tmp_path / "bad-rank"),
                        "--from-adapter", first["adapter_dir"], "--rank", "8", env={})
    assert code == 1 and "rank 4" in out["error"]["message"]


def test_a_leaked_key_is_revoked_at_once(gateway, gateway_env):
    """`peftserve key list|revoke`: the revoked key answers 401 on the very next request (this
    gateway drops its lookup cache), the tenant's other keys keep working; no key is ever shown."""
    code, created = run_cli("tenant", "create", "leaky", env=gateway_env)
    assert code == 0
    first = created["api_key"]
    code, second = run_cli("key", "create", "--tenant", "leaky", env=gateway_env)
    assert code == 0
    with gateway.client(first) as c:  # cached as valid before the revocation
        assert c.get("/v1/models").status_code == 200
    code, listed = run_cli("key", "list", "--tenant", "leaky", env=gateway_env)
    assert code == 0 and len(listed["keys"]) == 2 and all(k["revoked_at"] is None for k in listed["keys"])
    assert first not in json.dumps(listed) and first.startswith(listed["keys"][0]["prefix"])
    code, revoked = run_cli("key", "revoke", "--tenant", "leaky", "--id", str(listed["keys"][0]["id"]),
                            env=gateway_env)
    assert code == 0 and revoked["revoked_at"]
    with gateway.client(first) as c:
        resp = c.get("/v1/models")
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    with gateway.client(second["api_key"]) as c:
        assert c.get("/v1/models").status_code == 200
    assert run_cli("tenant", "create", "leaky-neighbour", env=gateway_env)[0] == 0
    code, out = run_cli("key", "revoke", "--tenant", "leaky-neighbour", "--id", str(listed["keys"][1]["id"]),
                        env=gateway_env)
    assert code == 1 and out["error"]["status"] == 404  # another tenant's key id: not found, not revoked
    with gateway.client(second["api_key"]) as c:
        assert c.get("/v1/models").status_code == 200


def test_a_disabled_tenant_is_refused_until_enabled(gateway, gateway_env):
    code, created = run_cli("tenant", "create", "paused", env=gateway_env)
    assert code == 0
    with gateway.client(created["api_key"]) as c:
        assert c.get("/v1/models").status_code == 200
        code, out = run_cli("tenant", "disable", "paused", env=gateway_env)
        assert code == 0 and out["disabled_at"]
        resp = c.get("/v1/models")
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
        code, tenants = run_cli("tenant", "list", env=gateway_env)
        assert next(t for t in tenants["tenants"] if t["name"] == "paused")["disabled_at"]
        assert run_cli("tenant", "enable", "paused", env=gateway_env)[0] == 0
        assert c.get("/v1/models").status_code == 200
