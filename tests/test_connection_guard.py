"""What a client can hold before it authenticates: head size and count, slow heads, slow
bodies, connections stuck in their head phase. Against the session's real gateway where the
default limits show it, and against a uvicorn server with the same protocol class and short
limits where the test would otherwise wait for the defaults."""

import socket
import threading
import time

import pytest
import uvicorn

from server.connection_guard import ConnectionLimits, guarded_protocol
from tests.gateway_harness import free_port, wait_until_http

# Short enough to keep the tests quick, long enough that a busy 2-core CI machine's scheduling
# delays (tenths of a second) never look like a slow client.
LIMITS = ConnectionLimits(header_timeout_s=1.0, body_timeout_s=1.5, max_header_bytes=4096, max_header_count=20,
                          max_pending_connections=4)


async def echo_app(scope, receive, send):
    """Reads the whole body, then answers 200 with its length."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def guarded_server():
    port = free_port()
    config = uvicorn.Config(echo_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            http=guarded_protocol(LIMITS))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until_http(f"http://127.0.0.1:{port}/", 30)
    yield port
    server.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def answer(s: socket.socket) -> str:
    """Everything the server sends until it closes the connection (or 5 s pass)."""
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks).decode(errors="replace")


def test_a_normal_request_with_a_body_passes(guarded_server):
    with connect(guarded_server) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        reply = answer(s)
    assert reply.startswith("HTTP/1.1 200") and reply.endswith("5")


def test_a_head_too_large_is_431_and_closed(guarded_server):
    for head in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",  # in one read
                 b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000):  # never finished
        with connect(guarded_server) as s:
            s.sendall(head)
            reply = answer(s)
        assert reply.startswith("HTTP/1.1 431"), reply[:100]
        assert '"code": "headers_too_large"' in reply


def test_too_many_headers_is_431(guarded_server):
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(LIMITS.max_header_count + 1))
    with connect(guarded_server) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        reply = answer(s)
    assert reply.startswith("HTTP/1.1 431") and '"code": "too_many_headers"' in reply


def test_a_slow_head_is_408_and_an_idle_connection_is_closed(guarded_server):
    with connect(guarded_server) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        reply = answer(s)
    assert reply.startswith("HTTP/1.1 408") and '"code": "request_timeout"' in reply
    assert time.monotonic() - started < 4.5  # closed by the guard, not by the socket's 5 s timeout
    with connect(guarded_server) as s:  # connects, sends nothing: closed without an answer
        started = time.monotonic()
        assert answer(s) == "" and time.monotonic() - started < 4.5


def test_a_body_that_stops_is_408(guarded_server):
    with connect(guarded_server) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        reply = answer(s)
    assert reply.startswith("HTTP/1.1 408"), reply[:100]


def test_a_slow_but_steady_body_passes(guarded_server):
    with connect(guarded_server) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        for byte in b"abcd":
            time.sleep(LIMITS.body_timeout_s / 5)
            s.sendall(bytes([byte]))
        reply = answer(s)
    assert reply.startswith("HTTP/1.1 200") and reply.endswith("4")


def test_connections_stuck_before_their_headers_are_bounded(guarded_server):
    stuck = [connect(guarded_server) for _ in range(LIMITS.max_pending_connections)]
    try:
        for s in stuck:
            s.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.1)
        with connect(guarded_server) as s:
            reply = answer(s)
        assert reply.startswith("HTTP/1.1 503") and "too_many_pending_connections" in reply
    finally:
        for s in stuck:
            s.close()
    time.sleep(0.2)
    with connect(guarded_server) as s:  # their places are free again
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer(s).startswith("HTTP/1.1 200")


def test_the_gateway_runs_with_the_guard(gateway):
    """The session gateway is configured by the same code as ``peftserve serve``: a 100 kB
    Authorization header is refused before any key lookup."""
    with connect(gateway.settings.port) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"k" * 100_000
                  + b"\r\nContent-Length: 2\r\n\r\n{}")
        reply = answer(s)
    assert reply.startswith("HTTP/1.1 431"), reply[:200]
