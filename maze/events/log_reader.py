"""Reading a whole stream fast: the rebuild's reader, on a NATS connection of its own.

nats-py spends ~9 µs on each message it delivers (its regex parser, a `Msg` with parsed headers,
an asyncio queue, a task switch), more than folding an event in a shard; a rebuild of a
history written as a live cluster writes it (three messages a run) was held to that. This reader
speaks the few parts of the protocol a replay needs: CONNECT (with the client connection's
server, credentials and TLS), one subscription, the JetStream API's consumer requests, and MSG and
HMSG parsed by slicing whole chunks of the socket's bytes: ~2 µs a message.

The consumer is an ephemeral pull consumer (no acks, in memory), asked for one batch at a time of
at most FETCH_BYTES: the server sends no more than that until the next request, so what this
process holds is bounded by a batch and the socket's buffers, however slowly the caller takes
them. A consumer the server drops (a leader moved, a stream restored) is made again from the
sequence after the last message read: every message of the stream up to `upto` comes once, in
order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import ParseResult

import structlog
from nats.aio.client import Client as NATS

from maze.core.errors import Unavailable
from maze.core.tls import client_context
from maze.events.store import api_prefix, describe_error

FETCH_BYTES = 8 << 20  # a batch of messages asked for at once, at most (or one message, if larger)
FETCH_MSGS = 100_000  # the same in messages (the bytes bound comes first for events of any size)
EXPIRES_S = 5.0  # a batch request the server ends after this long, sent or not
STALL_S = 10.0  # nothing at all from the server this long: the stream stopped answering
READ_CHUNK = 1 << 20
RECREATE_LIMIT = 5  # consumers made again for one read, at most, before it fails
ANSWER_S = 3.0  # past a request's expiry, how long its end may take to arrive
CREATE_S = 30.0  # how long a consumer may take to be made (a cluster electing its leaders)
STREAM_NOT_FOUND = 10059  # JetStream's error code: no retry makes it appear

log = structlog.get_logger(__name__)

Message = tuple[int, str, bytes]  # stream sequence, subject, payload (headers are not needed)


@dataclass
class _Dial:
    """How to reach the servers as the client does: its server first, then the rest of its pool,
    each with the credentials it connected with (a server it discovered has none in its URL)."""

    urls: list[ParseResult]
    auth: dict[str, str]
    tls: ssl.SSLContext | None
    tls_hostname: str | None

    @classmethod
    def like(cls, nc: NATS) -> _Dial:
        url = nc.connected_url
        if url is None or url.hostname is None:
            raise Unavailable("the NATS connection is not connected: cannot read the log")
        opts: dict[str, Any] = nc.options
        if any(opts.get(k) for k in ("user_credentials", "nkeys_seed", "signature_cb", "user_jwt_cb")):
            raise Unavailable(
                "reading the log for a rebuild needs a user and password or a token, not credentials"
            )
        auth: dict[str, str] = {}
        if url.username is not None and url.password is not None:
            auth = {"user": url.username, "pass": url.password}
        elif url.username is not None:
            auth = {"auth_token": url.username}
        elif opts.get("user") is not None and opts.get("password") is not None:
            auth = {"user": str(opts["user"]), "pass": str(opts["password"])}
        elif opts.get("token"):
            auth = {"auth_token": str(opts["token"])}
        tls = opts.get("tls") or (client_context() if url.scheme == "tls" else None)
        others = [u for u in nc.servers if u.hostname and (u.hostname, u.port) != (url.hostname, url.port)]
        return cls([url, *others], auth, tls, opts.get("tls_hostname"))


class LogReader:
    """One NATS connection for replays (`open`), reading streams with `read`; connected again
    (to any server of the client's) if it is lost midway."""

    def __init__(self, dial: _Dial, prefix: str) -> None:
        self._dial = dial
        self._prefix = prefix
        self._inbox = f"_INBOX.{secrets.token_hex(11)}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf = bytearray()
        self._pos = 0
        self._calls = 0
        self.fetch_bytes = FETCH_BYTES
        self.requests = 0  # batches asked for
        self.consumers = 0  # consumers made
        self.connections = 0  # connections made

    @classmethod
    @asynccontextmanager
    async def open(cls, nc: NATS) -> AsyncIterator[LogReader]:
        """A connection to the server `nc` is connected to, as the same user, over TLS if `nc` is."""
        log = cls(_Dial.like(nc), api_prefix(nc))
        await log._connect()
        try:
            yield log
        finally:
            await log._close()

    async def _connect(self) -> None:
        """To the first server of the client's that answers."""
        why = ""
        for url in self._dial.urls:
            try:
                await self._connect_to(url)
                return
            except (OSError, TimeoutError, ssl.SSLError, _Disconnected, _Silent) as exc:
                why = f"{url.hostname}:{url.port}: {describe_error(exc)}"
        raise Unavailable(f"cannot connect to NATS to read the log ({why})")

    async def _connect_to(self, url: ParseResult) -> None:
        host, port = str(url.hostname), url.port or 4222
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=READ_CHUNK * 2), STALL_S
        )
        try:
            line = await asyncio.wait_for(reader.readline(), STALL_S)
            if not line.startswith(b"INFO "):
                raise Unavailable(f"the server at {host}:{port} does not speak NATS")
            info = json.loads(line[5:])
            tls = self._dial.tls or (client_context() if info.get("tls_required") else None)
            if tls is not None:
                await asyncio.wait_for(
                    writer.start_tls(tls, server_hostname=self._dial.tls_hostname or host), STALL_S
                )
            connect = {
                "verbose": False,
                "pedantic": False,
                "tls_required": tls is not None,
                "name": "maze-log-reader",
                "lang": "python3",
                "version": "maze",
                "protocol": 1,
                "headers": True,
                "no_responders": True,
                "echo": False,
                **self._dial.auth,
            }
            writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            writer.write(f"SUB {self._inbox}.* 1\r\n".encode())
            self._reader, self._writer, self._buf, self._pos = reader, writer, bytearray(), 0
            await self._pong()
        except BaseException:
            writer.close()
            self._writer = None
            raise
        # a message alone always fits in a batch
        self.fetch_bytes = max(FETCH_BYTES, int(info.get("max_payload", 1 << 20)) + (64 << 10))
        self.connections += 1

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _reconnect(self) -> None:
        """After the connection was lost: any server of the client's, for up to CREATE_S (a cluster
        moving its leaders away from a server that died)."""
        await self._close()
        deadline = asyncio.get_running_loop().time() + CREATE_S
        while True:
            try:
                await self._connect()
                return
            except Unavailable as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.info("log_reader.reconnecting", error=str(exc))
                await asyncio.sleep(0.5)

    async def read(
        self, stream: str, subject: str, start: int, upto: int
    ) -> AsyncGenerator[list[Message], None]:
        """The messages of `stream` on `subject` from sequence `start` up to `upto` (inclusive), in
        order, each once, in lists as they arrive."""
        kept = start - 1
        lost = 0
        while kept < upto:
            consumer = None
            try:
                consumer = await self._consumer(stream, subject, kept + 1)
                async for msgs in self._fetch(stream, consumer, upto):
                    kept = msgs[-1][0]
                    yield msgs
                    if kept >= upto:
                        return
            except (_ConsumerGone, _Disconnected) as exc:
                lost += 1
                if lost > RECREATE_LIMIT:
                    raise Unavailable(
                        f"reading the {stream} stream: lost {lost} times ({describe_error(exc)})"
                    ) from exc
                log.info("log_reader.resuming", stream=stream, after=kept, why=describe_error(exc))
                if isinstance(exc, _Disconnected):
                    await self._reconnect()
            finally:
                if consumer is not None:
                    self._delete(stream, consumer)

    async def _fetch(self, stream: str, consumer: str, upto: int) -> AsyncIterator[list[Message]]:
        """Batches from the consumer until a message at or past `upto` (the caller stops there)."""
        request = json.dumps(
            {
                "batch": FETCH_MSGS,
                "max_bytes": self.fetch_bytes,
                "expires": int(EXPIRES_S * 1e9),
            }
        ).encode()
        where = f"{self._prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        idle = 0.0
        while True:
            reply = self._reply()  # each request its own: a late status of one ends no other
            self._pub(where, reply, request)
            self.requests += 1
            got = 0
            while True:
                try:  # the server ends every request by EXPIRES_S: silence past it is a consumer gone
                    msgs, ended = await self._messages(
                        reply.encode(), consumer.encode(), EXPIRES_S + ANSWER_S
                    )
                except _Silent as exc:
                    raise _ConsumerGone("a batch request went unanswered") from exc
                got += len(msgs)
                if msgs:
                    if msgs[-1][0] >= upto:  # the end: what came after `upto` is not asked for
                        yield [m for m in msgs if m[0] <= upto]
                        return
                    yield msgs
                if ended is None:
                    if got >= FETCH_MSGS:
                        break  # the whole batch came
                    continue
                code, text = ended
                if code in (404, 408) or (code == 409 and ("MaxBytes" in text or "Batch Completed" in text)):
                    break  # this request is over: ask again
                if code != 100:  # 100: a heartbeat
                    raise _ConsumerGone(f"{code} {text}")
            idle = 0.0 if got else idle + EXPIRES_S
            if idle >= STALL_S:
                raise Unavailable(f"the {stream} stream stopped answering during the rebuild")

    async def _consumer(self, stream: str, subject: str, start: int) -> str:
        config = {
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": max(1, start),
            "ack_policy": "none",
            "filter_subject": subject,
            "inactive_threshold": int(60e9),
            "mem_storage": True,
            "num_replicas": 1,
        }
        self.consumers += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CREATE_S
        while True:
            try:
                answer = await self._request(
                    f"{self._prefix}.CONSUMER.CREATE.{stream}",
                    {"stream_name": stream, "config": config},
                    ANSWER_S,
                )
            except _Silent:  # no JetStream leader to answer yet (one is being elected)
                answer = {"error": {"description": f"no answer in {ANSWER_S:.0f} s"}}
            error = answer.get("error")
            if error is None:
                return str(answer["name"])
            why = f"cannot read the {stream} stream: {error.get('description', error)}"
            if error.get("err_code") == STREAM_NOT_FOUND or loop.time() >= deadline:
                raise Unavailable(why)
            log.info("log_reader.consumer_retry", stream=stream, error=why)
            await asyncio.sleep(0.5)

    def _delete(self, stream: str, consumer: str) -> None:
        """Let the consumer go (not waited for: the server would drop it once idle anyway)."""
        if self._writer is not None and not self._writer.is_closing():
            self._pub(f"{self._prefix}.CONSUMER.DELETE.{stream}.{consumer}", None, b"")

    async def _request(self, subject: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """JetStream's answer; _Silent when none comes in `timeout` (a 503, no responders: none will)."""
        reply = self._reply()
        self._pub(subject, reply, json.dumps(body).encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise _Silent()
            answers, ended = await self._messages(reply.encode(), None, left)
            if answers:
                answer: dict[str, Any] = json.loads(answers[0][2])
                return answer
            if ended is not None and ended[0] == 503:
                return {"error": {"description": "JetStream is not answering (no responders)"}}

    def _reply(self) -> str:
        """A subject of this connection's inbox that no request has used."""
        self._calls += 1
        return f"{self._inbox}.{self._calls}"

    def _pub_raw(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise _Disconnected("the connection to NATS is closed")
        self._writer.write(data)

    def _pub(self, subject: str, reply: str | None, payload: bytes) -> None:
        head = f"PUB {subject} {reply} {len(payload)}\r\n" if reply else f"PUB {subject} {len(payload)}\r\n"
        self._pub_raw(head.encode() + payload + b"\r\n")

    async def _pong(self) -> None:
        while True:
            line = await self._line()
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise Unavailable(
                    f"the NATS server refused the log reader: {line[5:].decode(errors='replace')}"
                )

    async def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n", self._pos)
            if end >= 0:
                line = bytes(self._buf[self._pos : end])
                self._pos = end + 2
                return line
            await self._more()

    async def _more(self, timeout: float = STALL_S) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        if self._reader is None or self._writer is None or self._writer.is_closing():
            raise _Disconnected("the connection to NATS is closed")
        try:
            chunk = await asyncio.wait_for(self._reader.read(READ_CHUNK), timeout)
        except TimeoutError as exc:
            raise _Silent() from exc
        except (OSError, ssl.SSLError) as exc:
            raise _Disconnected(f"the connection to NATS failed: {describe_error(exc)}") from exc
        if not chunk:
            raise _Disconnected("the NATS server closed the connection")
        self._buf += chunk

    async def _messages(
        self, inbox: bytes, consumer: bytes | None, timeout: float = STALL_S
    ) -> tuple[list[Message], _Ended | None]:
        """What has arrived for `inbox` (waiting for more when nothing has): the stream messages of
        `consumer`, or (`consumer` None) answers to a request, up to the first status (a request
        ended, a heartbeat), which comes second. What a consumer let go of still sends, and
        statuses of requests made before, are passed over."""
        out: list[Message] = []
        while True:
            buf, pos, n = self._buf, self._pos, len(self._buf)
            ended = None
            while ended is None:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                op = buf[pos : pos + 4]
                if op == b"HMSG" or op[:3] == b"MSG":
                    args = buf[pos:end].split(b" ")
                    headed = op == b"HMSG"
                    size, hdr = int(args[-1]), int(args[-2]) if headed else 0
                    body = end + 2
                    if body + size + 2 > n:
                        break  # the rest of this message has not arrived
                    pos = body + size + 2
                    if len(args) == (6 if headed else 5):  # with a reply subject: a stream message
                        tokens = args[3].split(b".")
                        if tokens[1] == b"ACK" and consumer is not None:
                            mine, seq = (tokens[3], tokens[5]) if len(tokens) == 9 else (tokens[5], tokens[7])
                            if mine == consumer:
                                out.append((int(seq), args[1].decode(), bytes(buf[body + hdr : body + size])))
                    elif args[1] == inbox:
                        if headed and buf[body + 8 : body + 9] == b" ":  # `NATS/1.0 408 ...`: a status
                            ended = _status(bytes(buf[body : body + hdr]))
                        elif consumer is None:  # an answer
                            out.append((0, "", bytes(buf[body + hdr : body + size])))
                            ended = (0, "")
                    continue
                line = bytes(buf[pos:end])
                pos = end + 2
                if line == b"PING":
                    self._pub_raw(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    raise Unavailable(
                        f"the NATS server ended the log reader: {line[5:].decode(errors='replace')}"
                    )
                # INFO, +OK, PONG: nothing to do
            self._pos = pos
            if out or ended is not None:
                return out, ended
            await self._more(timeout)


_Ended = tuple[int, str]  # a status: its code and text (408, "Request Timeout")


class _Disconnected(Unavailable):
    """The connection to the server was lost (it died, or closed it): another may be dialled."""


class _Silent(Exception):
    """Nothing arrived from the server in the time given."""


class _ConsumerGone(Exception):
    """The server ended the consumer (a leader moved, the consumer was deleted): make it again."""


def _status(headers: bytes) -> tuple[int, str]:
    """`NATS/1.0 408 Request Timeout\\r\\n...`: (408, "Request Timeout")."""
    first = headers.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = first.split(" ", 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return code, parts[2] if len(parts) > 2 else ""
