"""The rebuild's own reader of the log (maze/events/log_reader.py): every message up to the asked
sequence once, in order, in batches the server never sends past a bound however slowly they are
taken; a consumer the server drops is made again where the read stood; the client connection's
credentials and TLS are the reader's; a stream that cannot be read fails with what happened."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from urllib.parse import urlparse

import nats
import pytest

from maze.core.errors import Unavailable
from maze.events import log_reader, subjects
from maze.events.log_reader import LogReader
from maze.events.store import ensure_streams
from maze.events.wire import Wire
from maze.head.nats_server import nats_server_binary, server_config
from tests.helpers import free_port, wait_until

SIZE = 64 << 10


async def _published(nc: nats.NATS, count: int, size: int = SIZE) -> list[int]:
    """`count` messages of `size` bytes on runs' subjects of a stream made empty first."""
    js = nc.jetstream()
    await ensure_streams(js)
    await js.purge_stream(subjects.RUNS_STREAM)
    return [
        (await js.publish(subjects.run_subject(f"run_{i % 7}"), bytes([i % 256]) * size)).seq
        for i in range(count)
    ]


async def _read(log: LogReader, start: int, upto: int, pause: float = 0.0) -> list[tuple[int, str, bytes]]:
    got = []
    async with aclosing(log.read(subjects.RUNS_STREAM, subjects.RUN_SUBJECTS, start, upto)) as batches:
        async for msgs in batches:
            got.extend(msgs)
            await asyncio.sleep(pause)  # a caller slower than the log
    return got


def test_every_message_once_in_order_in_bounded_batches(nats_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part of the stream read first gets that part alone; then 6 MiB read by a slow caller, at
    most ~1.1 MiB asked for at a time (the server's 1 MB message limit and some room): several
    requests, nothing lost, nothing twice, and what the first read's consumer still sent after
    the last message it was asked for (its batch went on) is not taken for the second's (no
    consumer made again for a delivery out of line)."""
    monkeypatch.setattr(log_reader, "FETCH_BYTES", 256 << 10)

    async def scenario() -> tuple[
        list[int], list[tuple[int, str, bytes]], list[tuple[int, str, bytes]], int, int
    ]:
        nc = await nats.connect(nats_server.url)
        try:
            published = await _published(nc, 96)
            async with LogReader.open(nc) as log:
                assert log.fetch_bytes < 2 << 20
                part = await _read(log, published[10], published[20])  # its batch goes on past it
                asked = log.requests
                whole = await _read(log, 1, published[-1], pause=0.02)
                requests = log.requests - asked
            return published, whole, part, requests, log.consumers
        finally:
            await nc.close()

    published, whole, part, requests, consumers = asyncio.run(scenario())
    assert [seq for seq, _, _ in whole] == published, "every message once, in order"
    assert all(data == bytes([i % 256]) * SIZE for i, (_, _, data) in enumerate(whole))
    assert {subject for _, subject, _ in whole} == {subjects.run_subject(f"run_{i}") for i in range(7)}
    assert requests >= 5, f"6 MiB came in batches of at most ~1.1 MiB, asked for one by one ({requests})"
    assert [seq for seq, _, _ in part] == published[10:21]
    assert consumers == 2


def test_a_consumer_the_server_drops_is_made_again_where_the_read_stood(nats_server) -> None:
    async def scenario() -> tuple[list[int], list[int], int]:
        nc = await nats.connect(nats_server.url)
        try:
            published = await _published(nc, 60)
            js = nc.jetstream()
            got: list[int] = []
            async with LogReader.open(nc) as log:
                old = log_reader.FETCH_MSGS
                log_reader.FETCH_MSGS = 5  # a request for every five, so the drop lands mid-read
                try:
                    reading = log.read(subjects.RUNS_STREAM, subjects.RUN_SUBJECTS, 1, published[-1])
                    async with aclosing(reading) as batches:
                        async for msgs in batches:
                            got.extend(seq for seq, _, _ in msgs)
                            if len(got) >= 20 and log.consumers == 1:
                                for info in await js.consumers_info(subjects.RUNS_STREAM):
                                    await js.delete_consumer(subjects.RUNS_STREAM, info.name)
                finally:
                    log_reader.FETCH_MSGS = old
            return published, got, log.consumers
        finally:
            await nc.close()

    published, got, consumers = asyncio.run(scenario())
    assert got == published, "nothing lost or read twice across the drop"
    assert consumers == 2


def test_a_stream_that_stops_short_of_the_sequence_asked(
    nats_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_reader, "EXPIRES_S", 0.3)
    monkeypatch.setattr(log_reader, "STALL_S", 1.0)

    async def scenario() -> tuple[int, str, str]:
        nc = await nats.connect(nats_server.url)
        try:
            published = await _published(nc, 3, size=10)
            async with LogReader.open(nc) as log:
                past = await _read(log, 1, published[-1] + 5)  # ends with the stream, at once
                assert [seq for seq, _, _ in past] == published
                with pytest.raises(Unavailable) as stalled:  # nothing at all from where it starts
                    await _read(log, published[-1] + 1, published[-1] + 5)
                with pytest.raises(Unavailable) as missing:
                    async with aclosing(log.read("NO_SUCH_STREAM", "x.>", 1, 1)) as batches:
                        async for _ in batches:
                            pass
            return len(await _read_again(nc, published[-1])), str(stalled.value), str(missing.value)
        finally:
            await nc.close()

    count, stalled, missing = asyncio.run(scenario())
    assert "stopped answering" in stalled
    assert "cannot read the NO_SUCH_STREAM stream" in missing and "not found" in missing
    assert count == 3, "a failed read leaves the next connection able to read"


async def _read_again(nc: nats.NATS, upto: int) -> list[tuple[int, str, bytes]]:
    async with LogReader.open(nc) as log:
        return await _read(log, 1, upto)


class _Server:
    """A nats-server of its own with `auth` (an authorization block) or TLS."""

    def __init__(
        self,
        root: Path,
        authorization: str | None = None,
        tls: tuple[str, str, str] | None = None,
        max_payload_mb: int = 1,
        top: str = "",
        jetstream: str = "",
    ):
        self.port = free_port()
        conf = root / "nats.conf"
        text = server_config(
            "127.0.0.1",
            self.port,
            root / "js",
            "interval",
            max_payload_mb,
            authorization=authorization,
            tls=tls,
        )
        conf.write_text(top + text.replace("jetstream {\n", "jetstream {\n" + jetstream))
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[_Server]:
    kind = request.param
    tls = None
    authorization = None
    if kind == "tls":
        if shutil.which("openssl") is None:
            pytest.skip("openssl makes the test certificates")
        from tests.test_tls import _certificates

        cert, key, ca = _certificates(tmp_path)
        tls = (str(cert), str(key), str(ca))
    elif kind.startswith("users"):
        authorization = 'authorization {\n  users: [{user: "maze-head", password: "s3cret"}]\n}\n'
    elif kind.startswith("token"):
        authorization = 'authorization {\n  token: "t0ken"\n}\n'
    extra: dict[str, object] = {}
    if kind == "limits":  # an operator's limit on batch requests, inherited by every consumer
        extra = {"jetstream": "  limits {\n    max_request_batch: 7\n  }\n"}
    elif kind == "strict":  # a client that cannot be written to for 1 s is cut off; 8 MB messages
        extra = {"top": "write_deadline: 1s\n", "max_payload_mb": 8}
    srv = _Server(tmp_path, authorization, tls, **extra)  # type: ignore[arg-type]
    srv.kind = kind  # type: ignore[attr-defined]
    srv.ca = tls[2] if tls else None  # type: ignore[attr-defined]
    try:
        wait_until(lambda: srv.proc.poll() is None and _accepts(srv.port), timeout=15)
        yield srv
    finally:
        srv.stop()


def _accepts(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("server", ["token", "users", "token-option", "users-option", "tls"], indirect=True)
def test_the_reader_connects_as_the_client_does(server: _Server) -> None:
    """With the client's token or user and password (from its URL, or given as its options), and
    over TLS verified with the client's own context: a server that asks for either refuses a
    connection without it."""
    kind = server.kind  # type: ignore[attr-defined]
    plain = f"nats://127.0.0.1:{server.port}"
    url = {
        "token": f"nats://t0ken@127.0.0.1:{server.port}",
        "users": f"nats://maze-head:s3cret@127.0.0.1:{server.port}",
        "tls": f"tls://127.0.0.1:{server.port}",
    }.get(kind, plain)
    options: dict[str, object] = {
        "token-option": {"token": "t0ken"},
        "users-option": {"user": "maze-head", "password": lambda: "s3cret"},  # nats-py takes callables
        "tls": {"tls": ssl.create_default_context(cafile=server.ca)},  # type: ignore[attr-defined]
    }.get(kind, {})  # type: ignore[assignment]

    async def scenario() -> list[int]:
        nc = await nats.connect(url, **options)  # type: ignore[arg-type]
        try:
            published = await _published(nc, 4, size=100)
            async with LogReader.open(nc) as log:
                got = await _read(log, 1, published[-1])
            assert [seq for seq, _, _ in got] == published
            return published
        finally:
            await nc.close()

    assert len(asyncio.run(scenario())) == 4


@pytest.mark.parametrize("killed", ["consumer", "connected"])
def test_a_read_goes_on_when_a_server_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed: str
) -> None:
    """On a 3-server cluster (the stream replicated 3 times), a server is killed mid-read.
    `consumer`: the one holding the read's consumer, not the one the reader is connected to: the
    batch it asked for goes unanswered, and a new consumer reads on from where the read stood,
    made once the stream answers again (where the server places the consumer is its choice: a
    read whose consumer landed on the reader's own server is let go and tried again).
    `connected`: the one the reader is connected to: it connects to another server of the
    client's, as the client's own user, and reads on there. Every message once, in order."""
    from tests.helpers import NatsCluster

    monkeypatch.setattr(log_reader, "FETCH_MSGS", 100)
    monkeypatch.setattr(log_reader, "EXPIRES_S", 1.0)
    monkeypatch.setattr(log_reader, "ANSWER_S", 1.0)
    cluster = NatsCluster(tmp_path / "nats")
    cluster.start()

    async def attempt(connected: int, upto: int) -> tuple[list[int], int] | None:
        nc = await nats.connect(cluster.urls[connected])
        got: list[int] = []
        try:
            async with LogReader.open(nc) as log:
                reading = log.read(subjects.RUNS_STREAM, subjects.RUN_SUBJECTS, 1, upto)
                async with aclosing(reading) as batches:
                    async for msgs in batches:
                        got.extend(seq for seq, _, _ in msgs)
                        if len(got) >= 300 and log.consumers == 1:
                            if killed == "connected":
                                cluster.kill(connected)
                                continue
                            (info,) = await nc.jetstream().consumers_info(subjects.RUNS_STREAM)
                            host = int(str(info.cluster.leader)[1:])  # type: ignore[union-attr]  # n0, n1, n2
                            if host == connected:
                                return None
                            cluster.kill(host)
            assert log.connections == (2 if killed == "connected" else 1)
            return got, log.consumers
        finally:
            with contextlib.suppress(Exception):  # its server may be the one killed
                await nc.close()

    async def scenario() -> tuple[list[int], tuple[list[int], int] | None]:
        nc = await nats.connect(cluster.urls[0])
        js = nc.jetstream(timeout=5)
        for _ in range(20):  # until the new cluster has elected its JetStream leader
            try:
                await ensure_streams(js, replicas=3)
                break
            except Exception:
                await asyncio.sleep(1)
        else:
            raise AssertionError("the cluster's JetStream never answered")
        published = [
            (await js.publish(subjects.run_subject(f"run_{i % 7}"), b"x" * 100)).seq for i in range(1_000)
        ]
        await nc.close()
        for tries in range(12):
            outcome = await attempt(tries % 3, published[-1])
            if outcome is not None:
                return published, outcome
        return published, None

    try:
        published, outcome = asyncio.run(scenario())
    finally:
        cluster.stop()
    assert outcome is not None, "the consumer was on the reader's own server every time"
    got, consumers = outcome
    assert got == published, "nothing lost or read twice across its consumer's death"
    assert consumers >= 2, "a new consumer read on"


@pytest.mark.parametrize("server", ["limits"], indirect=True)
def test_a_servers_limit_on_batch_requests_is_kept(server: _Server) -> None:
    """An operator's `max_request_batch` (7 here) is inherited by the reader's consumers: it asks
    for no more (the server would refuse the request, and every consumer made after it)."""

    published, got, log = asyncio.run(_read_everything(server, 30, 100))
    assert got == published
    assert log.consumers == 1 and log.requests >= 30 // 7


@pytest.mark.parametrize("server", ["strict"], indirect=True)
def test_a_slow_caller_is_not_cut_off_by_the_servers_write_deadline(server: _Server) -> None:
    """Batches of ~8 MiB from a server that drops a client it cannot write to for 1 s, taken by a
    caller that holds each for 1.5 s: a batch is read whole before it is handed on, so nothing
    waits at the server meanwhile. One connection throughout, every message once."""

    published, got, log = asyncio.run(_read_everything(server, 40, 1 << 20, pause=1.5))
    assert log.fetch_bytes >= 8 << 20
    assert got == published
    assert log.connections == 1, "never cut off"


async def _read_everything(
    server: _Server, count: int, size: int, pause: float = 0.0
) -> tuple[list[int], list[int], LogReader]:
    """`count` messages of `size` bytes published to `server`, and what a reader read of them."""
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    try:
        published = await _published(nc, count, size)
        async with LogReader.open(nc) as log:
            got = await _read(log, 1, published[-1], pause=pause)
        return published, [seq for seq, _, _ in got], log
    finally:
        await nc.close()


def test_a_batch_that_fills_its_bytes_exactly_ends_without_waiting(nats_server) -> None:
    """The server says nothing when a batch's messages fill its max_bytes exactly (it ends the
    request silently): the reader counts what the server counts, so it asks for the next batch
    at once rather than wait for an end that never comes and make a new consumer."""
    sizes: list[int] = []
    frames = Wire.frames

    async def counted(self, inbox, timeout, answers=False):  # type: ignore[no-untyped-def]
        out, status = await frames(self, inbox, timeout, answers)
        sizes.extend(f[5] for f in out if f[1])
        return out, status

    async def scenario() -> tuple[list[int], list[int], int, int]:
        nc = await nats.connect(nats_server.url)
        try:
            published = await _published(nc, 40, size=1000)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(Wire, "frames", counted)
                async with LogReader.open(nc) as log:  # the sizes the server counts, as read
                    await _read(log, 1, published[-1])
            async with LogReader.open(nc) as log:
                log.fetch_bytes = sum(sizes[:10])  # ten messages fill a batch to the byte
                got = await _read(log, 1, published[-1])
            return published, [seq for seq, _, _ in got], log.consumers, log.requests
        finally:
            await nc.close()

    published, got, consumers, requests = asyncio.run(scenario())
    assert got == published
    assert consumers == 1, "no batch was taken for lost"
    assert requests >= 4, "ten messages at most in each"


def test_a_server_that_never_finishes_its_greeting_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port where nothing speaks, and one that sends INFO but never answers PING: a clear
    Unavailable naming the server, not a timeout escaping as an internal error."""
    import socket

    from maze.events import wire

    monkeypatch.setattr(wire, "CONNECT_S", 0.5)
    silent, greeter = socket.socket(), socket.socket()
    for sock in (silent, greeter):
        sock.bind(("127.0.0.1", 0))
        sock.listen()

    async def scenario() -> list[str]:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b'INFO {"server_id":"x","max_payload":1048576}\r\n')
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(greet, sock=greeter)
        said = []
        try:
            for sock in (silent, greeter):
                host, port = sock.getsockname()
                dial = wire.Dial([urlparse(f"nats://{host}:{port}")], {}, None, None, None, False, "_INBOX")
                with pytest.raises(Unavailable) as refused:
                    await wire.Wire(dial).connect()
                said.append(str(refused.value))
        finally:
            server.close()
        return said

    said = asyncio.run(scenario())
    silent.close()
    assert all("cannot connect to NATS to read the log" in s and "127.0.0.1:" in s for s in said), said


def test_frames_are_cut_out_of_any_chunking_of_the_bytes() -> None:
    """MSG and HMSG with and without a reply subject, both forms of JetStream's ack subject (9
    tokens; 12 with a domain and an account hash), statuses on the inbox asked and on another,
    PING answered; the same frames whatever the chunks the bytes arrive in."""
    from maze.events import wire

    ack9 = b"$JS.ACK.MAZE_RUNS.C1.1.41.7.1700000000000000000.3"
    ack12 = b"$JS.ACK.hub.ACCHASH.MAZE_RUNS.C2.1.42.8.1700000000000000000.2.tok"

    def hmsg(subject: bytes, reply: bytes | None, headers: bytes, payload: bytes) -> bytes:
        size = len(headers) + len(payload)
        return b" ".join(
            [b"HMSG", subject, b"1", *([reply] if reply else []), b"%d" % len(headers), b"%d\r\n" % size]
        ) + (headers + payload + b"\r\n")

    first = hmsg(b"maze.run.a", ack9, b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n", b"hello")
    data = (
        first
        + b"PING\r\n"
        + b"MSG maze.run.b.node 1 "
        + ack12
        + b" 3\r\nabc\r\n"
        + hmsg(b"_INBOX.x.9", None, b"NATS/1.0 408 Request Timeout\r\n\r\n", b"")  # another request's
        + b"+OK\r\n"
        + hmsg(b"_INBOX.x.5", None, b"NATS/1.0 409 Message Size Exceeds MaxBytes\r\n\r\n", b"")
    )
    hello_size = len(b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n") + 5
    expected = [
        (b"C1", 7, 41, "maze.run.a", b"hello", len(b"maze.run.a") + len(ack9) + hello_size, 3),
        (b"C2", 8, 42, "maze.run.b.node", b"abc", len(b"maze.run.b.node") + len(ack12) + 3, 2),
    ]

    class Sink:
        def __init__(self) -> None:
            self.out = bytearray()

        def write(self, data: bytes) -> None:
            self.out += data

        def is_closing(self) -> bool:
            return False

    async def cut(step: int) -> tuple[list[wire.Frame], wire.Status | None, bytes]:
        reader = asyncio.StreamReader()
        w = wire.Wire(wire.Dial([], {}, None, None, None, False, "_INBOX"))
        sink = Sink()
        w._reader, w._writer = reader, sink  # type: ignore[assignment]

        async def feed() -> None:
            for i in range(0, len(data), step):
                reader.feed_data(data[i : i + step])
                await asyncio.sleep(0)

        feeding = asyncio.ensure_future(feed())
        got: list[wire.Frame] = []
        status = None
        while status is None:
            frames, status = await w.frames(b"_INBOX.x.5", 5)
            got.extend(frames)
        await feeding
        return got, status, bytes(sink.out)

    for step in (1, 2, 3, 7, 16, 64, len(data)):
        got, status, sent = asyncio.run(cut(step))
        assert got == expected, step
        assert status == (409, "Message Size Exceeds MaxBytes"), step
        assert sent == b"PONG\r\n", step


def test_messages_deleted_up_to_the_end_are_passed_over_at_once(
    nats_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The messages asked for may be gone (an operator deleted them): the read hands on those that
    are there, and ends where the stream does (its ack subjects say how many are left) rather than
    wait for them, or fail."""
    monkeypatch.setattr(log_reader, "FETCH_MSGS", 2)
    monkeypatch.setattr(log_reader, "STALL_S", 60.0)  # a wait for what is gone would show as a failure below

    async def scenario() -> tuple[list[int], list[int], list[int], int]:
        nc = await nats.connect(nats_server.url)
        try:
            seqs = await _published(nc, 6, size=10)
            js = nc.jetstream()
            for gone in (seqs[2], seqs[5]):
                await js.delete_msg(subjects.RUNS_STREAM, gone)
            async with LogReader.open(nc) as log:
                short = [seq for seq, _, _ in await asyncio.wait_for(_read(log, seqs[0], seqs[2]), 4)]
                whole = [seq for seq, _, _ in await asyncio.wait_for(_read(log, seqs[0], seqs[5]), 4)]
            return seqs, short, whole, log.consumers
        finally:
            await nc.close()

    seqs, short, whole, consumers = asyncio.run(scenario())
    assert short == seqs[:2], "up to a deleted message: those before it"
    assert whole == [seqs[0], seqs[1], seqs[3], seqs[4]], "up to a deleted last message: all that are there"
    assert consumers == 2, "one consumer a read: nothing taken for lost"


def test_each_server_is_checked_against_the_name_nats_py_checks() -> None:
    from maze.events.wire import Dial

    by_name = Dial([], {}, None, None, "head-a.example", False, "_INBOX")
    assert by_name.tls_name("head-b.example") == "head-b.example", "a server listed by name: its own"
    assert by_name.tls_name("10.0.0.7") == "head-a.example", "one advertised by address: the first's"
    by_option = Dial([], {}, None, "maze.internal", "head-a.example", False, "_INBOX")
    assert by_option.tls_name("head-b.example") == "maze.internal", "the client's tls_hostname: for every one"
    assert Dial([], {}, None, None, None, False, "_INBOX").tls_name("10.0.0.7") == "10.0.0.7"
