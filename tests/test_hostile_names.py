"""Hostile names, version suffixes and base imports get clear 4xx answers and touch nothing
outside the data folder (issue: hostile clients, items 1, 3 and 5)."""

import json
import threading

import pytest
from fastapi.testclient import TestClient

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from migration.base_versions.importer import import_base
from server.app import create_app
from adapters.errors import InvalidRequestError
from tests.gateway_harness import ADMIN_KEY, gateway_settings

BAD_VERSIONS = ["tiny@\u00b2", "tiny@\u0661", "tiny@99999999999999999999", "tiny@0", "tiny@-1", "tiny@01", "tiny@"]


@pytest.mark.parametrize("model", BAD_VERSIONS)
def test_bad_version_suffixes_never_500_nor_another_version(gateway, model):
    """As a model, a name with a bad version does not exist (404, as OpenAI answers); where a name
    is an argument, it is a 400. Before: 500s, and "tiny@\u0661" (Arabic-Indic one) served tiny@1."""
    key = gateway.tenant_key("hostile")
    with gateway.client(key) as c:
        resp = c.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 1})
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["code"] == "model_not_found"
        for resp in (c.get(f"/v1/adapters/x{model[4:]}"), c.delete(f"/v1/adapters/x{model[4:]}")):
            assert resp.status_code in (400, 404), resp.text
            assert resp.json()["error"]["message"]


@pytest.mark.parametrize("name", ["rt-a\n", "rt-b\r\n", "caf\u00e9", " lead", "a/b", "../x", "x" * 129])
def test_tenant_names_are_matched_whole_and_ascii(gateway, name):
    with gateway.admin() as admin:
        resp = admin.post("/admin/tenants", json={"name": name})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == "name"


RESERVED = ["base", "BASE", "lora-0123abcd", "LoRA-x", "ft:tiny:other-tenant:x", "FT:tiny:me:x", "tiny", "TINY",
            "Tiny"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_adapter_names_are_refused(gateway, lora_factory, name):
    resp = gateway.add_adapter("hostile-names", name, lora_factory(11))
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "name"


@pytest.fixture
def bases_root(tmp_path, tiny_base_dir):
    """A fresh registry (no workers) with tiny@1, and a folder outside the data folder to protect."""
    settings = gateway_settings(tmp_path / "data", database_url=None)
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    registry = Registry(make_session_factory(engine))
    import_base(registry, settings.bases_dir, name="tiny", source=tiny_base_dir)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    yield settings, registry, victim
    engine.dispose()


def test_base_import_name_cannot_leave_the_bases_folder(bases_root, tiny_base_dir, tmp_path):
    settings, _, victim = bases_root
    client = TestClient(create_app(settings))  # no lifespan: no workers
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for name in ("../../victim", "../victim", "..", "tiny/../../victim", ".staging-x"):
        for source in (str(tiny_base_dir), str(tmp_path / "missing"), str(victim)):
            resp = client.post("/admin/bases", json={"name": name, "source": source}, headers=headers)
            assert resp.status_code == 400, (name, source, resp.text)
    assert (victim / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in settings.bases_dir.iterdir()) == ["tiny"]


def test_base_import_refuses_what_is_not_a_model(bases_root, tmp_path):
    settings, registry, _ = bases_root
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    fake_gguf = tmp_path / "fake.gguf"
    fake_gguf.write_bytes(b"GGUF" + b"\0" * 64)
    no_config = tmp_path / "empty"
    no_config.mkdir()
    wrong_config = tmp_path / "wrong"
    wrong_config.mkdir()
    (wrong_config / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "huge"}))
    for source in (broken, fake_gguf, no_config, wrong_config):
        with pytest.raises(InvalidRequestError):
            import_base(registry, settings.bases_dir, name="other", source=source)
    assert sorted(p.name for p in settings.bases_dir.iterdir()) == ["tiny"]  # no staging left


def test_concurrent_imports_of_one_name_get_distinct_versions(bases_root, tiny_base_dir):
    settings, registry, _ = bases_root
    results, errors = [], []

    def run():
        try:
            results.append(import_base(registry, settings.bases_dir, name="tiny", source=tiny_base_dir).version)
        except Exception as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == [2, 3, 4]
    assert sorted(p.name for p in (settings.bases_dir / "tiny").iterdir()) == ["v1", "v2", "v3", "v4"]
    assert all((settings.bases_dir / "tiny" / f"v{v}" / "config.json").is_file() for v in (1, 2, 3, 4))
    assert sorted(p.name for p in settings.bases_dir.iterdir()) == ["tiny"]


def test_huge_version_numbers_in_admin_queries_are_400(gateway):
    with gateway.admin() as admin:
        for params in ({"from_version": 10**20, "to_version": 1}, {"from_version": 1, "to_version": -3}):
            resp = admin.get("/admin/bases/tiny/compatibility", params=params)
            assert resp.status_code == 400, resp.text
        resp = admin.post("/admin/migrations", json={"base_model": "tiny", "to_version": 10**20})
        assert resp.status_code == 400, resp.text
