"""The SDK's transport writes a request in one piece: what is written waits for the first read
(or 64 KiB), a large body still streams in pieces, and the SDK's client uses it against a real
server (an http.server on loopback that counts the reads a request took)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpcore
import httpx

from maze.sdk.transport import FLUSH_BYTES, CoalescingStream, coalescing_transport


class Recorder(httpcore.NetworkStream):
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.writes.append(bytes(buffer))

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b"answer"

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, info: str) -> Any:
        return info


def test_writes_wait_for_the_first_read() -> None:
    inner = Recorder()
    stream = CoalescingStream(inner)
    stream.write(b"POST / HTTP/1.1\r\n\r\n")
    stream.write(b"")
    stream.write(b"body")
    assert inner.writes == []
    assert stream.read(10) == b"answer"
    assert inner.writes == [b"POST / HTTP/1.1\r\n\r\nbody"]
    assert stream.get_extra_info("x") == "x"


def test_a_large_body_streams_in_pieces_and_close_drops_what_waits() -> None:
    inner = Recorder()
    stream = CoalescingStream(inner)
    piece = b"x" * (FLUSH_BYTES // 4)
    for _ in range(9):
        stream.write(piece)
    assert [len(w) for w in inner.writes] == [FLUSH_BYTES, FLUSH_BYTES]
    stream.write(b"tail")
    stream.close()
    assert inner.closed and sum(len(w) for w in inner.writes) == 2 * FLUSH_BYTES


def test_a_request_with_a_body_reaches_the_server_in_one_piece() -> None:
    """A loopback server reads what arrives before it answers: one send carried head and body."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    chunks: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"hello"):
                chunk = conn.recv(65536)
                chunks.append(chunk)
                data += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with httpx.Client(transport=coalescing_transport(True)) as client:
        answer = client.post(f"http://127.0.0.1:{port}/x", content=b"hello")
    thread.join(10)
    server.close()
    assert answer.status_code == 200 and answer.text == "ok"
    assert len(chunks) == 1 and chunks[0].endswith(b"\r\n\r\nhello"), chunks
