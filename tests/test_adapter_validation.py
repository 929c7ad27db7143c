"""Registering an adapter checks it against the base: each broken variant gets its own 4xx code
and nothing is stored; real PEFT adapters of several shapes pass."""

import pytest

from tests.malformed_adapters import cases


@pytest.fixture(scope="module")
def valid_folder(lora_factory):
    return lora_factory(11)


def _post(gateway, tenant, name, config: bytes, weights: bytes, weights_name: str):
    gateway.tenant_key(tenant)
    with gateway.admin() as admin:
        files = [("file", ("adapter_config.json", config)), ("file", (weights_name, weights))]
        return admin.post(f"/admin/tenants/{tenant}/adapters", data={"name": name}, files=files)


def test_table_of_malformed_adapters(gateway, valid_folder):
    table = cases(valid_folder)
    assert len(table) >= 20
    blobs_before = sorted(p.name for p in gateway.settings.blob_dir.rglob("*") if p.is_file())
    for case in table:
        resp = _post(gateway, "validation", case.id.replace("_", "-"), case.config, case.weights, case.weights_name)
        assert resp.status_code == case.status, (case.id, resp.text)
        error = resp.json()["error"]
        assert error["code"] == case.code, (case.id, error)
        assert error["message"]
    with gateway.admin() as admin:
        assert admin.get("/admin/tenants/validation/adapters").json() == []
    assert sorted(p.name for p in gateway.settings.blob_dir.rglob("*") if p.is_file()) == blobs_before
    assert gateway.worker()["state"] == "ready"


@pytest.mark.parametrize("rank,targets", [(4, "qv"), (8, "attn"), (16, "all")])
def test_real_peft_adapters_register(gateway, lora_factory, rank, targets):
    resp = gateway.add_adapter("validation-ok", f"r{rank}-{targets}", lora_factory(20 + rank, rank=rank,
                                                                                   targets=targets))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "ready" and body["rank"] == rank and body["base_version"] == 1


def test_name_rules_and_unknown_base(gateway, valid_folder):
    bad_name = gateway.add_adapter("validation-names", "bad name!", valid_folder)
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "name"
    unknown_base = gateway.add_adapter("validation-names", "x", valid_folder, base_model="nope@3")
    assert unknown_base.status_code == 404 and unknown_base.json()["error"]["code"] == "base_model_not_found"
    with gateway.admin() as admin:
        assert admin.post("/admin/tenants/nobody/keys").status_code == 404
        assert admin.post("/admin/tenants", json={"name": "validation-names"}).status_code == 409
