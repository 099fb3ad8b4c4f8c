"""The SDK's own SSE parsing over http.client (maze/sdk/sse_client.py), on canned chunked bodies."""

from __future__ import annotations

import http.client
import io

from maze.sdk.sse_client import EventStream, Frame


class _Canned:
    """A socket whose only use is `makefile`: the response bytes, as a connection would give them."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.raw))


class _Pool:
    def __init__(self) -> None:
        self.returned: list[object] = []

    def put_back(self, conn: object) -> None:
        self.returned.append(conn)


class _Conn:
    sock = object()

    def close(self) -> None:
        raise AssertionError("a connection read to its end is given back, not closed")


def _stream(body: bytes, chunk: int) -> tuple[EventStream, _Pool]:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    raw += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    response = http.client.HTTPResponse(_Canned(raw))
    response.begin()
    pool = _Pool()
    return EventStream(pool, _Conn(), response), pool


BODY = (
    b": a comment\n"
    b"event: accepted\ndata: {}\n\n"
    b"id: 7\r\nevent: events\r\ndata: [1,\r\ndata:2]\r\n\r\n"
    b"retry: 100\nid: 9\nevent: events\ndata: [3]\n\n"
    b"data: plain\n\n"
    b"event: end\ndata: {}\n\n"
)
FRAMES = [
    Frame("accepted", b"{}", None),
    Frame("events", b"[1,\n2]", "7"),
    Frame("events", b"[3]", "9"),
    Frame("message", b"plain", None),
    Frame("end", b"{}", None),
]


def test_frames_parse_the_same_whatever_the_chunks() -> None:
    for chunk in (1, 2, 3, 7, 64, len(BODY)):
        stream, pool = _stream(BODY, chunk)
        frames = iter(stream)
        assert [next(frames) for _ in FRAMES] == FRAMES, chunk
        stream.finish()
        assert stream.response.isclosed() and len(pool.returned) == 1


def test_a_long_line_over_many_reads() -> None:
    data = b"[" + b"0," * 600_000 + b"1]"
    stream, _ = _stream(b"id: 1\nevent: events\ndata: " + data + b"\n\n", 4096)
    assert list(stream) == [Frame("events", data, "1")]
