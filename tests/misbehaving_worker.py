"""A socket posing as a vLLM worker that misbehaves on cue, for the failure cases a real worker
only hits by timing (tests/test_fleet.py kills a real one)."""

import socket
import struct
import threading


def misbehaving_worker(how: str) -> tuple[str, socket.socket]:
    """Accepts connections, reads the request, then: 'reset' (RST, as a killed process's kernel
    may send), 'close' (FIN without a response), 'hang' (never answers), or 'half_dead' (answers
    GET /health, resets everything else: it died between two health checks, or half of it did).
    Returns its URL and the listening socket (close it to stop)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            request = conn.recv(65536)
            if how == "half_dead" and request.startswith(b"GET /health "):
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                conn.close()
            elif how in ("reset", "half_dead"):
                reset(conn)
            elif how == "close":
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener
