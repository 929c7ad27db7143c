"""A request that a worker drops unanswered is sent again to another worker of its base, even
while that worker still passes its health check (it died between two checks, or half of it
did). The gateway is a real process in front of the session's real vLLM worker; the failing
worker is a socket that answers /health and resets every other request."""

import asyncio

import httpx

from server.workers.worker_process import ExternalWorker
from server.metrics import GatewayMetrics
from server.settings import Settings
from tests.misbehaving_worker import misbehaving_worker
from tests.second_gateway import second_gateway


def test_a_request_dropped_by_a_worker_that_looks_healthy_is_served_by_another(gateway, tiny_base_dir, tmp_path):
    url, listener = misbehaving_worker("half_dead")
    # The half-dead worker is first: on a tie of requests in flight, bare-base requests go to it.
    server = second_gateway(gateway, tiny_base_dir, tmp_path / "failover", worker_url=[url, gateway.worker()["url"]])
    try:
        key = server.tenant_key("failover-co")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            for stream in (False, True, False):
                resp = c.post("/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 3,
                                                       "stream": stream})
                assert resp.status_code == 200, (resp.text, server.log_tail())
                assert resp.headers["x-peftserve-worker"] == "tiny@1#1"
                assert '"error"' not in resp.text and (not stream or resp.text.rstrip().endswith("[DONE]"))
        assert "worker tiny@1#0 dropped the connection unanswered; sending the request again" in server.log_tail()
    finally:
        server.stop()
        listener.close()


def test_a_health_answer_that_raced_a_refused_request_does_not_mark_the_worker_ready(tmp_path):
    url, listener = misbehaving_worker("slow_health")  # each health check takes 1 s

    async def scenario() -> list[bool]:
        settings = Settings(data_dir=tmp_path, worker_health_interval_s=0.1)
        worker = ExternalWorker("w#0", url, settings, GatewayMetrics(settings.metrics_adapter_label_limit))
        worker.start()
        seen = []
        try:
            await asyncio.sleep(0.3)  # the first check is under way
            worker.mark_unreachable()  # a request was refused meanwhile
            await asyncio.sleep(1.0)  # the check has answered "healthy"
            seen.append(worker.ready)
            await asyncio.sleep(1.5)  # a check that started after the refusal has answered
            seen.append(worker.ready)
        finally:
            await worker.stop()
        return seen

    assert asyncio.run(scenario()) == [False, True]
    listener.close()
