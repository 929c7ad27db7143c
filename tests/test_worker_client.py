"""How the worker client classifies a worker that gives no answer. The end-to-end proof is
tests/test_fleet.py (a real vLLM worker killed mid-traffic); this pins the classification with a
socket that misbehaves on cue, since a real kill lands in any of these cases by timing."""

import asyncio
import socket

import pytest

from server.workers.worker_client import WorkerClient
from adapters.errors import WorkerUnavailableError, WorkerUnreachableError
from tests.misbehaving_worker import misbehaving_worker


@pytest.mark.parametrize("how", ["reset", "close"])
def test_a_connection_dropped_before_any_answer_can_be_sent_again(how):
    url, listener = misbehaving_worker(how)

    async def call():
        client = WorkerClient("w", url, timeout_s=5)
        try:
            await client.post("/v1/completions", {"prompt": "hi"})
        finally:
            await client.aclose()

    with pytest.raises(WorkerUnreachableError) as caught:
        asyncio.run(call())
    assert caught.value.refused is False
    listener.close()


def test_a_refused_connection_is_marked_refused_and_a_timeout_is_not_resent():
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    url, listener = misbehaving_worker("hang")

    async def call(target: str, timeout_s: float):
        client = WorkerClient("w", target, timeout_s=timeout_s)
        try:
            await client.post("/v1/completions", {"prompt": "hi"})
        finally:
            await client.aclose()

    with pytest.raises(WorkerUnreachableError) as refused:
        asyncio.run(call(f"http://127.0.0.1:{port}", 5))
    assert refused.value.refused is True
    with pytest.raises(WorkerUnavailableError) as timed_out:
        asyncio.run(call(url, 0.5))
    assert not isinstance(timed_out.value, WorkerUnreachableError)  # the worker may still be working on it
    listener.close()
