"""/ready is the readiness probe of every gateway pod: true when this gateway can take traffic
(its registry answers, at least one worker is ready), so one base version's workers being down
does not take every gateway out of the Service; ``?all=true`` asks for every served version."""

import httpx
from fastapi.testclient import TestClient

from adapters.registry.database import make_engine, make_session_factory, upgrade_schema
from adapters.registry.registry import Registry
from migration.base_versions.importer import import_base
from server.app import create_app
from tests.gateway_harness import gateway_settings

DEAD = "http://127.0.0.1:9"  # nothing listens there


def two_served_versions(tmp_path, tiny_base_dir, worker_urls: dict):
    data = tmp_path / "data"
    settings = gateway_settings(data, database_url=None, worker_urls=worker_urls, worker_health_interval_s=0.2)
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    registry = Registry(make_session_factory(engine))
    import_base(registry, settings.bases_dir, name="tiny", source=tiny_base_dir)
    engine.dispose()
    return settings


def wait_for(client: TestClient, path: str, status: int) -> httpx.Response:
    import time

    deadline = time.monotonic() + 30
    while (resp := client.get(path)).status_code != status:
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.1)
    return resp


def test_one_versions_workers_down_leave_the_gateway_ready(gateway, tiny_base_dir, tmp_path):
    settings = two_served_versions(tmp_path, tiny_base_dir,
                                   {"tiny@1": gateway.worker()["url"], "tiny@2": DEAD})
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services
        v1 = services.registry.find_base_version("tiny", 1)
        v2 = services.registry.add_base_version("tiny", 2, path=v1.path, fingerprint="v2", architecture=v1.architecture,
                                                source="test")
        client.portal.call(services.pool.ensure, v2)  # served too (as when adapters live on it)
        ready = wait_for(client, "/ready", 200).json()
        assert ready["registry"] is True and ready["workers"]["tiny@2#0"] != "ready"
        assert client.get("/ready?all=true").status_code == 503  # the strict form still says so


def test_no_worker_or_no_registry_is_not_ready(tiny_base_dir, tmp_path):
    settings = two_served_versions(tmp_path, tiny_base_dir, {"tiny@1": DEAD})
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").status_code == 503
        services = client.app.state.services

        def broken():
            raise ConnectionError("database down")

        services.registry.ping = broken
        body = client.get("/ready").json()
        assert body == {**body, "ready": False, "registry": False}


def test_reconciles_are_serialized_and_start_at_most_one_follow_up(gateway, tiny_base_dir, tmp_path):
    """A version whose worker never becomes ready: however many passes run (periodic, after
    migrations, concurrently), one follow-up waits for it, and the stand-in version is kept."""
    settings = two_served_versions(tmp_path, tiny_base_dir,
                                   {"tiny@1": gateway.worker()["url"], "tiny@2": DEAD})
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services
        v1 = services.registry.find_base_version("tiny", 1)
        services.registry.add_base_version("tiny", 2, path=v1.path, fingerprint="v2", architecture=v1.architecture,
                                           source="test")
        wait_for(client, "/ready", 200)

        async def many_passes():
            import asyncio

            return await asyncio.gather(*(services.served.reconcile() for _ in range(8)))

        retired = client.portal.call(many_passes)
        assert all(r == [] for r in retired)  # tiny@1 stands in for tiny@2 until it is ready: kept
        assert services.served.follow_ups == 1
        assert set(services.pool.groups) == {"tiny@1", "tiny@2"}
