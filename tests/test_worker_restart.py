"""A worker killed during use: clear 503s while it restarts, then service resumes, nothing lost."""

import os
import signal
import time

import pytest

from tests.test_serving import complete


@pytest.mark.disruptive
def test_killed_worker_restarts_and_serves_again(gateway, lora_factory):
    assert gateway.add_adapter("epsilon", "survivor", lora_factory(9)).status_code == 201
    key = gateway.tenant_key("epsilon")
    before = complete(gateway, key, "survivor")
    assert before.status_code == 200

    pid = gateway.worker()["pid"]
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.2)
    during = complete(gateway, key, "survivor")
    assert during.status_code == 503
    assert during.json()["error"]["code"] == "worker_unavailable"

    deadline = time.monotonic() + 240
    while (resp := complete(gateway, key, "survivor")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(1)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["text"] == before.json()["choices"][0]["text"]
    worker = gateway.worker()
    assert worker["pid"] != pid and worker["restarts"] >= 1
    with gateway.admin() as admin:
        assert [a["name"] for a in admin.get("/admin/tenants/epsilon/adapters").json()] == ["survivor"]
