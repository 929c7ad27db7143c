"""A key revoked while a lookup of it is under way: the lookup may finish (it began before the
revoke) but must not put the key back in the gateway's cache, or the revoked key would keep
working there for the cache's TTL. Deterministic: the lookup is held inside the database call."""

import asyncio
import threading
from types import SimpleNamespace

import pytest

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from server.deps import tenant_for_headers
from adapters.errors import AuthenticationError
from server.ttl_cache import TtlCache


class HeldRegistry:
    """The real registry, with tenant_for_key held after it has read the (still valid) key."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.looked_up = threading.Event()
        self.release = threading.Event()

    def tenant_for_key(self, key: str):
        tenant = self.registry.tenant_for_key(key)
        self.looked_up.set()
        assert self.release.wait(10)
        return tenant


async def test_a_lookup_racing_a_revoke_does_not_cache_the_revoked_key(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade_schema(engine)
    registry = Registry(make_session_factory(engine))
    tenant, key = registry.create_tenant("racer")
    held = HeldRegistry(registry)
    services = SimpleNamespace(registry=held, tenant_cache=TtlCache(ttl_s=60))
    headers = {"authorization": f"Bearer {key}"}

    lookup = asyncio.create_task(tenant_for_headers(headers, services))
    assert await asyncio.to_thread(held.looked_up.wait, 10)
    key_id = registry.list_api_keys("racer")[0].id
    registry.revoke_api_key("racer", key_id)  # what the admin route does, then it clears the cache
    services.tenant_cache.clear()
    held.release.set()
    assert (await lookup).name == "racer"  # authenticated before the revoke: may finish

    held.looked_up.clear()
    with pytest.raises(AuthenticationError):  # not served from a cache the racing lookup refilled
        await tenant_for_headers(headers, services)
    engine.dispose()


def test_the_cache_refuses_values_looked_up_before_a_clear():
    cache = TtlCache(ttl_s=60)
    before = cache.generation
    cache.clear()
    cache.put("k", 1, looked_up_in=before)
    assert cache.get("k") is None
    cache.put("k", 2, looked_up_in=cache.generation)
    assert cache.get("k") == 2
