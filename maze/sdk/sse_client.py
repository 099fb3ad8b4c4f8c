"""A run's event stream from the head over the standard library's `http.client`, on a few
keep-alive connections per `Http`.

A submit-and-follow (`POST /runs?follow=true`) and a `GET /runs/{id}/stream` are the SDK's hot
path: through httpx's sync client a small request cost ~760 µs round trip on loopback, through
`http.client` ~270 µs. The server-sent events are parsed here (`id:`, `event:`, `data:`, a blank
line dispatches, `:` starts a comment; a line ends with LF or CR LF, the head writes LF) from
what each socket read brings (`read1`, one call per read, where `readline()` on a chunked body
costs a `peek()` and a `read()` per line).

A connection goes back to the pool only once its response was read to the end; one that failed,
or whose stream was left unread, is closed and dropped."""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit

import httpx

from maze.core.tls import TLS_CA_ENV, client_context

CONNECT_TIMEOUT_S = 30.0  # to connect and to send; a followed stream has no read timeout
HEADERS_TIMEOUT_S = 300.0  # for the answer's headers (a 100,000-task submit is recorded in ~5 s)
IDLE_KEPT = 4
_READ_SIZE = 64 * 1024
_SEND_SLICE = 1024 * 1024  # a big body goes in slices, each with its own send timeout

# what a dropped, refused, reset or cut-short connection raises (ssl and timeout errors are OSErrors)
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (OSError, http.client.HTTPException)


class Frame(NamedTuple):
    """One server-sent event: its type, its data (lines joined by `\\n`) and its `id`, if it had one."""

    event: str
    data: bytes
    id: str | None


class EventStream:
    """One response on a pooled connection: its status, then its frames. `finish()` reads it to
    the end and gives the connection back; `close()` drops the connection unless it was given back."""

    def __init__(
        self, pool: StreamPool, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ):
        self.pool = pool
        self.connection: http.client.HTTPConnection | None = conn
        self.response = response
        self.status = response.status

    def read_body(self) -> bytes:
        """The whole body (an error's JSON), giving the connection back."""
        body = self.response.read()
        self._release()
        return body

    def __iter__(self) -> Iterator[Frame]:
        read = self.response.read1
        buf = bytearray()
        searched = 0  # a long line arriving over many reads is searched once, not once per read
        event = ""
        data: list[bytes] = []
        event_id: str | None = None
        while chunk := read(_READ_SIZE):
            buf += chunk
            start = 0
            while (end := buf.find(b"\n", max(start, searched))) >= 0:
                line = bytes(buf[start : end - 1 if end > start and buf[end - 1] == 13 else end])
                start = end + 1
                if not line:
                    if event or data or event_id is not None:
                        yield Frame(event or "message", b"\n".join(data), event_id)
                    event, data, event_id = "", [], None
                    continue
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    data.append(value)
                elif name == b"event":
                    event = value.decode()
                elif name == b"id" and b"\0" not in value:
                    event_id = value.decode()
                # a comment (empty name), `retry` and unknown fields are ignored
            del buf[:start]
            searched = len(buf)

    def finish(self) -> None:
        """Read to the end of the body (the head ends it right after `end`) so that the connection
        is reused: closing it unread would cost a new connection per run."""
        try:
            self.response.read()
        except TRANSPORT_ERRORS:
            self.close()  # the events are all in; the connection is dropped instead of reused
            return
        self._release()

    def close(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            conn.close()

    def _release(self) -> None:
        conn, self.connection = self.connection, None
        if conn is None:
            return
        if self.response.isclosed() and not self.response.will_close and conn.sock is not None:
            self.pool.put_back(conn)
        else:
            conn.close()


class StreamPool:
    """Keep-alive connections to one head for its event streams (`http://` or `https://`)."""

    def __init__(self, server_url: str, headers: dict[str, str] | None = None) -> None:
        self._url = server_url
        self._headers = dict(headers or {})  # on every request (the API token)
        url = urlsplit(server_url)
        self._https = url.scheme == "https"
        self._prefix = url.path.rstrip("/")
        self._idle: list[http.client.HTTPConnection] = []
        self._tls: ssl.SSLContext | None = None
        self.created = 0  # connections opened so far (tests count reuse with it)

    def open(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> EventStream:
        """Send a request and read its status line and headers: raises a TRANSPORT_ERRORS error
        when the head cannot be reached or drops the connection before answering."""
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        conn = self._take_idle()
        if conn is not None:
            try:
                return self._send(conn, method, target, headers or {}, body)
            except TRANSPORT_ERRORS:
                # the head closed it while idle (its keep-alive ran out as we sent): once more on a
                # new connection. Safe to repeat: a GET, or a submit the head deduplicates by run id.
                conn.close()
        conn = self._connect()
        try:
            return self._send(conn, method, target, headers or {}, body)
        except BaseException:
            conn.close()
            raise

    def put_back(self, conn: http.client.HTTPConnection) -> None:
        if len(self._idle) < IDLE_KEPT:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _take_idle(self) -> http.client.HTTPConnection | None:
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:  # another thread took the last one
                return None
            if conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()  # closed by the head (or sent something unasked): not reusable
        return None

    def _connect(self) -> http.client.HTTPConnection:
        url = urlsplit(self._url)
        try:
            host, port = url.hostname, url.port
        except ValueError:  # a port that is not a number
            host, port = None, None
        if url.scheme not in ("http", "https") or not host:
            # an HTTPException: the caller's "cannot reach the Maze server", as httpx's is
            raise http.client.InvalidURL(
                f"a Maze server URL is http:// or https:// and a host, not {self._url!r}"
            )
        conn: http.client.HTTPConnection
        if self._https:
            if self._tls is None:  # $MAZE_TLS_CA (a private CA), else httpx's verification (certifi...)
                self._tls = client_context() if os.environ.get(TLS_CA_ENV) else httpx.create_ssl_context()
            conn = http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT_S, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _keepalive(conn.sock)
        self.created += 1
        return conn

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> EventStream:
        conn.sock.settimeout(CONNECT_TIMEOUT_S)
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("Accept", "text/event-stream")
        for name, value in {**self._headers, **headers}.items():
            conn.putheader(name, value)
        if body is None:
            conn.endheaders()
        else:
            conn.putheader("Content-Length", str(len(body)))
            if len(body) <= _SEND_SLICE:
                conn.endheaders(body)  # with the headers, in one write
            else:
                conn.endheaders()
                view = memoryview(body)
                for at in range(0, len(body), _SEND_SLICE):
                    conn.send(view[at : at + _SEND_SLICE])
        conn.sock.settimeout(HEADERS_TIMEOUT_S)  # a wide run's submit takes seconds to record
        response = conn.getresponse()
        # a run may take hours: its stream waits as long, and TCP keepalive finds a head that is gone
        if conn.sock is not None:  # (None: the answer closes the connection, e.g. another server's error)
            conn.sock.settimeout(None)
        return EventStream(self, conn, response)


def _keepalive(sock: socket.socket) -> None:
    """Probe an idle connection after 30 s, every 10 s, 3 times: a stream whose head vanished
    (a network partition, a machine gone) errors after about a minute and is resumed or reported,
    instead of waiting for ever."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the head closed it (EOF)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])
