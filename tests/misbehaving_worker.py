"""A socket posing as a vLLM worker that misbehaves on cue, for the failure cases a real worker
only hits by timing (tests/test_fleet.py kills a real one)."""

import socket
import struct
import threading


def misbehaving_worker(how: str) -> tuple[str, socket.socket]:
    """Accepts connections, reads the request, then: 'reset' (RST, as a killed process's kernel
    may send), 'close' (FIN without a response), 'hang' (never answers), 'half_dead' (answers
    GET /health, resets everything else: it died between two health checks, or half of it did),
    or 'slow_health' (answers GET /health after 1 s, so a test can act while a check is under way).
    Returns its URL and the listening socket (close it to stop)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def answer_health(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        conn.close()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            request = conn.recv(65536)
            if how == "slow_health" and request.startswith(b"GET /health "):
                threading.Timer(1.0, answer_health, (conn,)).start()
            elif how == "half_dead" and request.startswith(b"GET /health "):
                answer_health(conn)
            elif how in ("reset", "half_dead"):
                reset(conn)
            elif how == "close":
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener
