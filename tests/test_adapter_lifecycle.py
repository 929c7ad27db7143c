"""The adapter lifecycle under races, on the real gateway and worker: every status change is a
compare-and-set, so a DELETE while an upload is being live-checked wins for good. The race is
made deterministic by holding the live check's probe request at the worker client."""

import threading

import httpx
import pytest

from adapters.registry.adapter_lifecycle import ALLOWED, check_transition
from adapters.registry.models import AdapterStatus as S
from server.adapters_api.live_check import PROBE


class HeldProbe:
    """Wraps the worker client's post: the live check's probe waits until released."""

    def __init__(self, client):
        self.client, self.original = client, client.post
        self.probing, self.release = threading.Event(), threading.Event()

    async def post(self, path, body):
        if path == "/v1/completions" and body.get("prompt") == PROBE["prompt"] and body.get("max_tokens") == 4:
            self.probing.set()
            import asyncio
            await asyncio.to_thread(self.release.wait, 600)  # a DELETE that waited for it would time out
        return await self.original(path, body)

    def __enter__(self):
        self.client.post = self.post
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.client.post = self.original


def test_a_delete_during_the_live_check_is_final(gateway, lora_factory):
    key = gateway.tenant_key("lifecycle")
    slot = gateway.app.state.services.pool.group("tiny@1")[0]
    folder = lora_factory(41)
    answer: dict = {}
    with HeldProbe(slot.worker.client) as held:
        upload = threading.Thread(target=lambda: answer.update(
            response=gateway.add_adapter("lifecycle", "racer", folder)))
        upload.start()
        assert held.probing.wait(120), "the live check never probed"
        with gateway.client(key) as c:
            listed = c.get("/v1/adapters/racer").json()["versions"][0]
            assert listed["status"] == "validating"
            assert c.delete("/v1/adapters/racer").status_code == 200
        held.release.set()
        upload.join(120)
    response = answer["response"]
    assert response.status_code == 409 and response.json()["error"]["code"] == "adapter_deleted", response.text
    with gateway.client(key) as c:
        assert c.get("/v1/adapters/racer").status_code == 404
        assert c.post("/v1/completions", json={"model": "racer", "prompt": "x", "max_tokens": 1}).status_code == 404
        assert "racer" not in {m["id"] for m in c.get("/v1/models").json()["data"]}
    row = next(a for a in gateway.app.state.services.registry.adapters_in(S.deleted) if a.name == "racer")
    assert row.lora_name not in slot.residency.resident  # the check's load was undone


def test_transitions_are_compare_and_set(gateway, lora_factory):
    registry = gateway.app.state.services.registry
    assert gateway.add_adapter("lifecycle", "cas", lora_factory(42)).status_code == 201
    row = next(a for a in registry.list_adapters(ready_only=False) if a.name == "cas")
    # A second gateway re-checking a pending adapter cannot move a ready one back.
    assert registry.transition(row.id, S.validating, expect=(S.received, S.validating)) is None
    assert registry.get_adapter(row.id).status == S.ready
    assert registry.transition(row.id, S.deleted, expect=(S.ready,)).status == S.deleted
    assert registry.transition(row.id, S.ready, expect=(S.validating,)) is None  # deleted is final
    assert registry.get_adapter(row.id).status == S.deleted


def test_the_lifecycle_table():
    assert ALLOWED[S.deleted] == frozenset()
    assert all(S.deleted in ALLOWED[s] for s in S if s != S.deleted)
    for to in (S.ready, S.validating, S.received):
        with pytest.raises(ValueError):
            check_transition((S.deleted,), to)
    with pytest.raises(ValueError):
        check_transition((S.ready,), S.validating)
