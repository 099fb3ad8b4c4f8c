"""The controller's lease against a real nats-server: epochs only ever grow (above every one the log
has seen elected, even with the lease bucket lost), a head still replaying the log takes nothing,
and a holder that finds a higher epoch elected takes its lease again above it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import nats

from maze.core.clock import now_ms
from maze.events import subjects
from maze.events.runs import LeaderElected
from maze.events.store import EventStore, ensure_streams
from maze.head.lease import KEY, Lease
from tests.helpers import HeadProcess, NatsServer, wait_until


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


def _lease(js: nats.js.JetStreamContext, head: str, floor: list[int], ready: list[bool]) -> Lease:
    async def known() -> int:
        return floor[0]

    changes: list[tuple[bool, int]] = []
    lease = Lease(
        js, head, 0.3, lambda leading, epoch: changes.append((leading, epoch)), known, lambda: ready[0]
    )
    lease.changes = changes  # type: ignore[attr-defined]
    return lease


async def test_epochs_grow_above_every_one_known_and_a_replaying_head_takes_nothing(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    kv = await js.key_value(subjects.LEADER_BUCKET)
    try:
        await kv.purge(KEY)
    except Exception:
        pass
    floor, ready = [7], [False]
    first = _lease(js, "h1", floor, ready)
    runs: list[asyncio.Task[None]] = [asyncio.create_task(first.run())]
    try:
        await asyncio.sleep(1.2)  # four lease periods, the key absent: still replaying, it waits
        assert not first.leading and first.changes == []  # type: ignore[attr-defined]
        ready[0] = True
        await _until(lambda: first.leading)
        assert first.epoch == 8 and first.fresh  # above the 7 the log had elected
        floor[0] = 12  # an epoch above its own elected in the log (a bucket lost and retaken)
        await _until(lambda: first.epoch == 13)
        assert first.leading and (await kv.get(KEY)).value is not None
        # the bucket's key lost: another head takes it above everything it knows of, and the
        # first, whose renewal finds the key gone, steps down (and, made not ready, does not
        # race the second for the free key: which of two heads wins a free key is not the point)
        ready[0] = False
        await kv.delete(KEY)
        second = _lease(js, "h2", [13], [True])
        runs.append(asyncio.create_task(second.run()))
        await _until(lambda: second.leading)
        assert second.epoch == 14
        await _until(lambda: not first.leading)
        assert not first.fresh
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await nc.close()


def test_a_head_takes_an_epoch_above_the_logs_latest_election_when_the_bucket_is_gone(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    head = None
    try:

        async def elected_before() -> None:
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                await ensure_streams(js)
                event = LeaderElected(head_id="gone", epoch=40, at_ms=now_ms())
                await EventStore(nc).publish(subjects.LEADER_SUBJECT, [event])
            finally:
                await nc.close()

        asyncio.run(elected_before())  # the lease bucket is new and empty: only the log remembers
        head = HeadProcess(tmp_path / "head", nats_url=server.url, extra=["--lease-seconds", "1"])
        head.start()

        def leader() -> dict[str, object]:
            view: dict[str, object] = httpx.get(f"{head.url}/cluster/resources", timeout=10).json()["leader"]
            return view

        wait_until(lambda: leader()["this_head"], timeout=30)
        assert int(leader()["epoch"]) == 41  # type: ignore[call-overload]
    finally:
        if head is not None:
            head.stop()
        server.stop()
