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


def test_a_pending_check_is_claimed_by_one_gateway(gateway, lora_factory):
    """Gateways finishing pending checks in the background claim each one (received ->
    validating); a second claim fails until the first is stale (its gateway died mid-check)."""
    from datetime import timedelta

    from adapters.registry.models import utcnow

    registry = gateway.app.state.services.registry
    assert gateway.add_adapter("lifecycle", "pending", lora_factory(43)).status_code == 201
    row = next(a for a in registry.list_adapters() if a.name == "pending")
    registry.transition(row.id, S.deleted, expect=(S.ready,))  # a stand-in row: reuse it as pending
    with registry.session() as s:
        from sqlalchemy import update

        from adapters.registry.models import Adapter
        s.execute(update(Adapter).where(Adapter.id == row.id).values(status=S.received))
    now = utcnow()
    assert registry.claim_check(row.id, stale_before=now - timedelta(seconds=300)).status == S.validating
    assert registry.claim_check(row.id, stale_before=now - timedelta(seconds=300)) is None  # taken
    assert registry.claim_check(row.id, stale_before=utcnow() + timedelta(seconds=1)) is not None  # stale
    registry.transition(row.id, S.deleted, expect=(S.validating,))


def test_concurrent_background_passes_run_each_check_once(gateway, lora_factory):
    """Two passes over the pending checks at once (as two gateways would): one probe."""
    import asyncio

    from sqlalchemy import update

    from adapters.registry.models import Adapter

    services = gateway.app.state.services
    registry = services.registry
    assert gateway.add_adapter("lifecycle", "twice", lora_factory(44)).status_code == 201
    row = next(a for a in registry.list_adapters() if a.name == "twice")
    with registry.session() as s:  # as if its upload had found no worker
        s.execute(update(Adapter).where(Adapter.id == row.id).values(status=S.received))
    probes = []
    client = services.pool.group("tiny@1")[0].worker.client
    original = client.post

    async def counting(path, body):
        if body.get("model") == row.lora_name and body.get("prompt") == PROBE["prompt"]:
            probes.append(1)
            await asyncio.sleep(0.3)  # both passes are under way at once
        return await original(path, body)

    client.post = counting
    try:
        gateway_loop = gateway.server.servers[0].get_loop()  # the gateway runs in its own thread
        asyncio.run_coroutine_threadsafe(_two_passes(services.adapters.live_check), gateway_loop).result(120)
    finally:
        client.post = original
    assert len(probes) == 1
    assert registry.get_adapter(row.id).status == S.ready


async def _two_passes(live_check):
    import asyncio

    await asyncio.gather(live_check._finish_pending(), live_check._finish_pending())
