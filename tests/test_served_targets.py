"""Worker flags follow the settings, and uploads and training accept exactly the modules the
workers apply LoRA to (vLLM silently ignores an adapter's weights for a module it did not wrap)."""

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from migration.base_versions.importer import import_base
from server.app import create_app
from server.workers.worker_process import worker_command, worker_environment
from server.settings import Settings
from tests.gateway_harness import ADMIN_KEY, gateway_settings
from tests.tiny_models import adapter_files


def test_worker_flags_follow_the_settings(tmp_path):
    settings = Settings(data_dir=tmp_path, max_resident_adapters=12, max_loras_per_batch=6,
                        lora_target_modules=["q_proj", "v_proj"], lora_kernel="vllm")
    cmd = worker_command(settings, "/models/base", 8100)
    at = cmd.index("--lora-target-modules")
    assert cmd[at + 1:at + 3] == ["q_proj", "v_proj"] and cmd[at + 3].startswith("--")
    assert cmd[cmd.index("--max-cpu-loras") + 1] == "12"  # vLLM's cache holds every resident adapter
    assert cmd[cmd.index("--max-loras") + 1] == "6"
    assert worker_environment(settings, "k")["PEFTSERVE_LORA_KERNEL"] == "vllm"
    assert worker_environment(Settings(data_dir=tmp_path), "k")["PEFTSERVE_LORA_KERNEL"] == "native"
    assert Settings(data_dir=tmp_path, lora_kernel="peftserve").workers.lora_kernel == "native"  # its old name


def test_more_adapters_per_batch_than_resident_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="max_loras_per_batch"):
        Settings(data_dir=tmp_path, max_resident_adapters=4, max_loras_per_batch=8)
    assert Settings(data_dir=tmp_path, max_resident_adapters=4).max_loras_per_batch == 4  # default follows
    assert Settings(data_dir=tmp_path).max_loras_per_batch == Settings(data_dir=tmp_path).max_resident_adapters


@pytest.fixture
def qv_only_app(tmp_path, tiny_base_dir):
    """A gateway app (no lifespan: no worker) whose workers would wrap only q_proj and v_proj."""
    settings = gateway_settings(tmp_path / "data", database_url=None, lora_target_modules=["q_proj", "v_proj"])
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    import_base(Registry(make_session_factory(engine)), settings.bases_dir, name="tiny", source=tiny_base_dir)
    engine.dispose()
    client = TestClient(create_app(settings))
    client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    assert client.post("/admin/tenants", json={"name": "t"}).status_code == 201
    return client


def test_an_adapter_targeting_an_unserved_module_is_refused(qv_only_app, lora_factory):
    files = [("file", (name, data)) for name, data in adapter_files(lora_factory(7, targets="attn")).items()]
    resp = qv_only_app.post("/admin/tenants/t/adapters", data={"name": "attn"}, files=files)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "target_not_served"
    assert "['k_proj', 'o_proj']" in error["message"] and "['q_proj', 'v_proj']" in error["message"]
    assert qv_only_app.get("/admin/tenants/t/adapters").json() == []


def test_training_an_unserved_module_is_refused_before_the_job_exists(qv_only_app):
    key = qv_only_app.post("/admin/tenants/t/keys").json()["api_key"]
    resp = qv_only_app.post("/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {key}"}, json={
        "model": "tiny", "training_file": "file-none", "hyperparameters": {"target_modules": ["q_proj", "o_proj"]}})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_hyperparameters" and error["param"] == "hyperparameters.target_modules"
    assert "['o_proj']" in error["message"]
