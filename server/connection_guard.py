"""Bounds on what a client can hold before it has authenticated, at the HTTP connection.

uvicorn reads request heads of any size, waits for them forever, and waits forever between two
chunks of a body: a 4 MB ``Authorization`` header was processed, and 1 byte/s clients held their
connections indefinitely. Authentication (``authenticate_first.py``) runs once the head is
complete, so what comes before it is bounded here, in uvicorn's own extension point (the
``http`` protocol class it is given), without touching uvicorn:

- the head (request line + headers) must arrive within ``header_timeout_s`` and stay within
  ``max_header_bytes`` and ``max_header_count`` (else 408 / 431, connection closed);
- a body may pause at most ``body_timeout_s`` between chunks (else 408), not counting pauses
  the gateway causes itself by not reading (flow control);
- at most ``max_pending_connections`` connections may be in their head phase at once; further
  connections are closed on arrival.
"""

import asyncio
import json
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_header_count: int
    max_pending_connections: int


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing; the refusal was already recorded."""


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _raw_error(status: int, message: str, code: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "service_unavailable_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    return head + body


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol subclass for ``uvicorn.run(http=...)``; one per server (it holds the
    server's set of connections in their head phase)."""
    pending: set["GuardedProtocol"] = set()

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._timer: asyncio.TimerHandle | None = None
            self._refusal: tuple[int, str, str] | None = None
            self._head_bytes = self._head_size = self._header_count = 0
            if len(pending) >= limits.max_pending_connections:
                self._refusal = (503, "", "too_many_pending_connections")
                transport.write(_raw_error(503, "too many connections are sending request headers; retry shortly",
                                           "too_many_pending_connections"))
                transport.close()
                return
            self._enter_head()

        def connection_lost(self, exc: Exception | None) -> None:
            pending.discard(self)
            self._cancel_timer()
            super().connection_lost(exc)

        # The head phase: from connecting (or the first byte of a later request) to the end of the headers.
        def _enter_head(self) -> None:
            pending.add(self)
            self._head_bytes = self._head_size = self._header_count = 0
            self._arm(limits.header_timeout_s, self._head_timed_out)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self not in pending:  # a later request on a kept-alive connection
                self._enter_head()

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None or self.transport.is_closing():
                return
            in_head = self in pending
            if in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if in_head and self in pending and self._head_bytes > limits.max_header_bytes:
                self._refuse(431, f"request headers are larger than {limits.max_header_bytes} bytes",
                             "headers_too_large")

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > limits.max_header_count:
                self._refusal = (431, f"more than {limits.max_header_count} request headers", "too_many_headers")
                raise _HeadRefused
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_head(self, size: int) -> None:
            # The parsed size too: a whole head can arrive in one read (up to 256 KiB).
            self._head_size += size
            if self._head_size > limits.max_header_bytes:
                self._refusal = (431, f"request headers are larger than {limits.max_header_bytes} bytes",
                                 "headers_too_large")
                raise _HeadRefused

        def on_headers_complete(self) -> None:
            pending.discard(self)
            self._arm(limits.body_timeout_s, self._body_timed_out)
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._arm(limits.body_timeout_s, self._body_timed_out)
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._cancel_timer()
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers every parser error with 400; a refusal raised in a callback is ours.
            if self._refusal is not None:
                status, message, code = self._refusal
                self._refusal = None
                self._refuse(status, message, code)
            else:
                super().send_400_response(msg)

        def _refuse(self, status: int, message: str, code: str) -> None:
            pending.discard(self)
            self._cancel_timer()
            self._refusal = (status, message, code)  # nothing more is parsed on this connection
            if not self.transport.is_closing():
                self.transport.write(_raw_error(status, message, code))
                self.transport.close()

        def _head_timed_out(self) -> None:
            if self._head_bytes == 0 and self._head_size == 0:
                pending.discard(self)
                self.transport.close()  # nothing was sent: nothing to answer
                return
            self._refuse(408, f"request headers were not complete within {limits.header_timeout_s:g} s",
                         "request_timeout")

        def _body_timed_out(self) -> None:
            if self.flow.read_paused:  # the gateway stopped reading, not the client: wait on
                self._arm(limits.body_timeout_s, self._body_timed_out)
                return
            if self.cycle is not None and not self.cycle.response_started:
                self._refuse(408, f"the request body paused for more than {limits.body_timeout_s:g} s",
                             "request_timeout")
            else:
                self._refusal = (408, "", "request_timeout")
                self.transport.close()

        def _arm(self, delay: float, callback) -> None:
            self._cancel_timer()
            self._timer = self.loop.call_later(delay, callback)

        def _cancel_timer(self) -> None:
            timer = getattr(self, "_timer", None)
            if timer is not None:
                timer.cancel()
                self._timer = None

    return GuardedProtocol
