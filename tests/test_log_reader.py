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

import nats
import pytest

from maze.core.errors import Unavailable
from maze.events import log_reader, subjects
from maze.events.log_reader import LogReader
from maze.events.store import ensure_streams
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
    """6 MiB read by a slow caller, at most ~1.1 MiB asked for at a time (the server's 1 MB message
    limit and some room): several requests, nothing lost, nothing twice. A second read on the
    same connection, of a part of the stream, gets that part alone: what the first read's consumer
    still sent after its last message asked for is not taken for the second's."""
    monkeypatch.setattr(log_reader, "FETCH_BYTES", 256 << 10)

    async def scenario() -> tuple[
        list[int], list[tuple[int, str, bytes]], list[tuple[int, str, bytes]], int, int
    ]:
        nc = await nats.connect(nats_server.url)
        try:
            published = await _published(nc, 96)
            async with LogReader.open(nc) as log:
                assert log.fetch_bytes < 2 << 20
                whole = await _read(log, 1, published[-1], pause=0.02)
                requests = log.requests
                part = await _read(log, published[10], published[20])
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


def test_a_stream_that_stops_short_of_the_sequence_asked_fails_the_read(
    nats_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_reader, "EXPIRES_S", 0.3)
    monkeypatch.setattr(log_reader, "STALL_S", 1.0)

    async def scenario() -> tuple[int, str, str]:
        nc = await nats.connect(nats_server.url)
        try:
            published = await _published(nc, 3, size=10)
            async with LogReader.open(nc) as log:
                with pytest.raises(Unavailable) as stalled:
                    await _read(log, 1, published[-1] + 5)
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

    def __init__(self, root: Path, authorization: str | None = None, tls: tuple[str, str, str] | None = None):
        self.port = free_port()
        conf = root / "nats.conf"
        conf.write_text(
            server_config(
                "127.0.0.1", self.port, root / "js", "interval", 1, authorization=authorization, tls=tls
            )
        )
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
    elif kind == "users":
        authorization = 'authorization {\n  users: [{user: "maze-head", password: "s3cret"}]\n}\n'
    elif kind == "token":
        authorization = 'authorization {\n  token: "t0ken"\n}\n'
    srv = _Server(tmp_path, authorization, tls)
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


@pytest.mark.parametrize("server", ["token", "users", "tls"], indirect=True)
def test_the_reader_connects_as_the_client_does(server: _Server) -> None:
    """With the client's token or user and password (from its URL), and over TLS verified with
    the client's own context: a server that asks for either refuses a connection without it."""
    kind = server.kind  # type: ignore[attr-defined]
    url = {
        "token": f"nats://t0ken@127.0.0.1:{server.port}",
        "users": f"nats://maze-head:s3cret@127.0.0.1:{server.port}",
        "tls": f"tls://127.0.0.1:{server.port}",
    }[kind]
    tls = ssl.create_default_context(cafile=server.ca) if kind == "tls" else None  # type: ignore[attr-defined]

    async def scenario() -> list[int]:
        nc = await nats.connect(url, tls=tls) if tls else await nats.connect(url)
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
