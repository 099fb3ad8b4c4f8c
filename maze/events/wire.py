"""The NATS protocol, as much as a fast reader of the log needs (log_reader.py): a connection made as
a nats-py client's own (its servers, credentials and TLS), publishing, and MSG/HMSG frames cut out
of whole chunks of the socket's bytes with no object made per message but the tuple handed on.

Credentials are taken as nats-py sends them: its options' user and password, else its token, else
the URL's user and password (or a lone user: a token). A server the client discovered (its URL
carries none) gets the same ones, and over TLS is verified by the name of the server first
connected to, as nats-py does for servers advertised by address. Credentials files and nkeys are
not spoken here (Maze connects with URLs only).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import ParseResult

from nats.aio.client import Client as NATS

from maze.core.errors import Unavailable
from maze.core.tls import client_context

READ_CHUNK = 1 << 20
CONNECT_S = 10.0  # a server that does not greet, or answer the handshake, this long is skipped

# a stream message as read: (consumer, its delivery count, stream sequence, subject, payload,
# the bytes the server counts against a batch's max_bytes (subject, reply subject and body), and
# how many messages for the consumer the stream held after it)
Frame = tuple[bytes, int, int, str, bytes, int, int]
Status = tuple[int, str]


class Disconnected(Unavailable):
    """The connection to the server was lost (it died, closed it, or is shutting down)."""


class Silent(Exception):
    """Nothing arrived from the server in the time given."""


@dataclass
class Dial:
    """How to reach the client's servers as the client: its server first, then the rest of its pool."""

    urls: list[ParseResult]
    auth: dict[str, str]
    tls: ssl.SSLContext | None
    tls_hostname: str | None  # the client's own name to check every server's certificate against
    first_name: str | None  # its first server's host name: checked for servers known by address
    tls_first: bool
    inbox_prefix: str

    @classmethod
    def like(cls, nc: NATS) -> Dial:
        url = nc.connected_url
        if url is None or url.hostname is None:
            raise Unavailable("the NATS connection is not connected: cannot read the log")
        if any(
            getattr(nc, k, None)
            for k in ("_user_credentials", "_nkeys_seed", "_nkeys_seed_str", "_signature_cb")
        ):
            raise Unavailable(
                "reading the log for a rebuild needs a user and password or a token, not credentials"
            )
        opts: dict[str, Any] = nc.options
        auth: dict[str, str] = {}
        if opts.get("user") is not None and opts.get("password") is not None:
            auth = {"user": _given(opts["user"]), "pass": _given(opts["password"])}
        elif opts.get("token") is not None:
            auth = {"auth_token": _given(opts["token"])}
        elif url.username is not None:
            auth = (
                {"auth_token": url.username}
                if url.password is None
                else {"user": url.username, "pass": url.password}
            )
        tls = opts.get("tls") or (client_context() if url.scheme == "tls" else None)
        first_name = None if _is_ip(url.hostname) else url.hostname
        others = [u for u in nc.servers if u.hostname and (u.hostname, u.port) != (url.hostname, url.port)]
        prefix = bytes(getattr(nc, "_inbox_prefix", b"_INBOX")).decode()
        return cls(
            [url, *others],
            auth,
            tls,
            opts.get("tls_hostname"),
            first_name,
            bool(opts.get("tls_handshake_first")),
            prefix,
        )

    def tls_name(self, host: str) -> str:
        """The name a server's certificate is checked against, as nats-py checks it."""
        return self.tls_hostname or ((self.first_name or host) if _is_ip(host) else host)


class Wire:
    """One connection, made again to any of the client's servers when lost."""

    def __init__(self, dial: Dial) -> None:
        self._dial = dial
        self._inbox = f"{dial.inbox_prefix}.{secrets.token_hex(11)}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf = bytearray()
        self._pos = 0
        self._calls = 0
        self.max_payload = 1 << 20
        self.connections = 0  # connections made

    @classmethod
    def like(cls, nc: NATS) -> Wire:
        return cls(Dial.like(nc))

    async def connect(self) -> None:
        """To the first of the client's servers that answers."""
        failures = []
        for url in self._dial.urls:
            try:
                await self._connect_to(url)
                return
            except Disconnected as exc:
                failures.append(str(exc))
            except Unavailable:
                raise  # refused (credentials, permissions): the next server would say the same
        raise Unavailable(f"cannot connect to NATS to read the log: {'; '.join(failures)}")

    async def reconnect(self, within_s: float) -> None:
        """After the connection was lost: any of the client's servers, for up to `within_s` (a
        cluster moving its leaders away from a server that died)."""
        await self.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            try:
                await self.connect()
                return
            except Unavailable:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.5)

    async def _connect_to(self, url: ParseResult) -> None:
        host, port = str(url.hostname), url.port or 4222
        where = f"{host}:{port}"
        tls = self._dial.tls
        name = self._dial.tls_name(host)
        try:
            if self._dial.tls_first:
                tls = tls or client_context()
                opened = asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=name, limit=READ_CHUNK * 2
                )
            else:
                opened = asyncio.open_connection(host, port, limit=READ_CHUNK * 2)
            reader, writer = await asyncio.wait_for(opened, CONNECT_S)
        except (OSError, TimeoutError) as exc:
            raise Disconnected(f"{where}: {exc or type(exc).__name__}") from exc
        try:
            line = await asyncio.wait_for(reader.readline(), CONNECT_S)
            if not line.startswith(b"INFO "):
                raise Disconnected(f"{where} does not speak NATS")
            info = json.loads(line[5:])
            if not self._dial.tls_first:
                tls = tls or (client_context() if info.get("tls_required") else None)
                if tls is not None:
                    await asyncio.wait_for(writer.start_tls(tls, server_hostname=name), CONNECT_S)
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
            # SUB before PING: a refused subscription is said before the PONG
            writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
            writer.write(f"SUB {self._inbox}.* 1\r\nPING\r\n".encode())
            self._reader, self._writer, self._buf, self._pos = reader, writer, bytearray(), 0
            await self._pong(where)
        except BaseException as exc:
            writer.close()
            self._reader = self._writer = None
            if isinstance(exc, Unavailable | asyncio.CancelledError):
                raise
            if isinstance(exc, Silent | TimeoutError | OSError | ssl.SSLError | ValueError):
                raise Disconnected(f"{where}: {type(exc).__name__} {exc}".strip()) from exc
            raise
        self.max_payload = int(info.get("max_payload", 1 << 20))
        self.connections += 1

    async def _pong(self, where: str) -> None:
        while True:
            end = self._buf.find(b"\r\n", self._pos)
            if end < 0:
                await self._more(CONNECT_S)
                continue
            line = bytes(self._buf[self._pos : end])
            self._pos = end + 2
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise Unavailable(f"the NATS server at {where} refused the log reader: {_err(line)}")

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), CONNECT_S)

    def new_inbox(self) -> str:
        """A subject of this connection's inbox that no request has used."""
        self._calls += 1
        return f"{self._inbox}.{self._calls}"

    def publish(self, subject: str, payload: bytes, reply: str | None = None) -> None:
        head = f"PUB {subject} {reply} {len(payload)}\r\n" if reply else f"PUB {subject} {len(payload)}\r\n"
        self._write(head.encode() + payload + b"\r\n")

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise Disconnected("the connection to NATS is closed")
        self._writer.write(data)

    def publish_quietly(self, subject: str, payload: bytes) -> None:
        """A publish whose failure changes nothing (letting a consumer go: it goes by itself once idle)."""
        with contextlib.suppress(Disconnected):
            self.publish(subject, payload)

    async def request(self, subject: str, payload: bytes, timeout: float) -> dict[str, Any]:
        """A JetStream API request's JSON answer; Silent when none comes in `timeout`. No responders
        (503) is an answer: `{"error": {"code": 503, ...}}`."""
        reply = self.new_inbox()
        self.publish(subject, payload, reply)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise Silent()
            answers, status = await self.frames(reply.encode(), left, answers=True)
            if answers:
                try:
                    answer = json.loads(answers[0][4])
                except ValueError as exc:
                    raise Unavailable(f"JetStream's answer on {subject} is not JSON: {exc}") from exc
                if not isinstance(answer, dict):
                    raise Unavailable(f"JetStream's answer on {subject} is not an object")
                return answer
            if status is not None and status[0] == 503:
                return {"error": {"code": 503, "description": "JetStream is not answering (no responders)"}}

    async def frames(
        self, inbox: bytes, timeout: float, answers: bool = False
    ) -> tuple[list[Frame], Status | None]:
        """What has arrived (waiting up to `timeout` for more when nothing has): the stream messages
        of every consumer, or (`answers`) the messages on `inbox` (answers to a request, in the
        payload's place), up to the first status on `inbox` (a request ended, a heartbeat), which
        comes second. Statuses of other requests are passed over."""
        out: list[Frame] = []
        while True:
            buf, pos, n = self._buf, self._pos, len(self._buf)
            status: Status | None = None
            while status is None:
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
                        reply = args[3]
                        t = reply.split(b".")
                        if len(t) >= 9 and t[1] == b"ACK" and not answers:
                            # $JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<delivery>.<ts>.<pending>,
                            # or with a domain and an account hash before the stream (11 or 12)
                            k = 0 if len(t) == 9 else 2
                            subject = args[1]
                            out.append(
                                (
                                    bytes(t[3 + k]),
                                    int(t[6 + k]),
                                    int(t[5 + k]),
                                    subject.decode(),
                                    bytes(buf[body + hdr : body + size]),
                                    len(subject) + len(reply) + size,
                                    int(t[8 + k]),
                                )
                            )
                    elif args[1] == inbox:
                        if headed and buf[body + 8 : body + 9] == b" ":  # `NATS/1.0 408 ...`: a status
                            status = _status(bytes(buf[body : body + hdr]))
                        elif answers:
                            out.append((b"", 0, 0, "", bytes(buf[body + hdr : body + size]), 0, 0))
                            status = (0, "")
                    continue
                line = bytes(buf[pos:end])
                pos = end + 2
                if line == b"PING":
                    self._write(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    text = _err(line)
                    if "Permissions Violation" in text and ".CONSUMER.DELETE." in text:
                        continue  # may not delete its consumers: they go by themselves once idle
                    if "Stale Connection" in text:
                        self._pos = pos
                        raise Disconnected("the NATS server found the connection stale")
                    raise Unavailable(f"the NATS server ended the log reader: {text}")
                elif line.startswith(b"INFO ") and b'"ldm":true' in line.replace(b" ", b""):
                    self._pos = pos
                    raise Disconnected("the NATS server is shutting down (lame duck mode)")
                # +OK, PONG and other INFO: nothing to do
            self._pos = pos
            if out or status is not None:
                return out, status
            await self._more(timeout)

    async def _more(self, timeout: float) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        if self._reader is None:
            raise Disconnected("the connection to NATS is closed")
        try:
            chunk = await asyncio.wait_for(self._reader.read(READ_CHUNK), timeout)
        except TimeoutError as exc:
            raise Silent() from exc
        except (OSError, ssl.SSLError) as exc:
            raise Disconnected(f"the connection to NATS failed: {type(exc).__name__} {exc}") from exc
        if not chunk:
            raise Disconnected("the NATS server closed the connection")
        self._buf += chunk


def _given(value: Any) -> str:
    """A credential as nats-py takes it: a value, or a callable that gives it."""
    return str(value() if callable(value) else value)


def _status(headers: bytes) -> Status:
    """`NATS/1.0 408 Request Timeout\\r\\n...`: (408, "Request Timeout")."""
    first = headers.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = first.split(" ", 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return code, parts[2] if len(parts) > 2 else ""


def _err(line: bytes) -> str:
    return line[4:].decode(errors="replace").strip().strip("'")


def _is_ip(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
        return True
    except ValueError:
        return False
