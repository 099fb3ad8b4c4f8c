"""A rebuild's fold split over processes (maze/projections/shards.py): every run in exactly one shard,
leadership in all of them; the shards' files together equal the fold of the same log in one
process (a deposed leader's late decisions refused in every shard); a shard that fails or dies
fails the rebuild with what happened, and leaves no process and no file behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import duckdb
import nats
import psutil
import pytest
from nats.js import JetStreamContext

from maze.core.errors import Unavailable
from maze.events import subjects
from maze.events.codec import decode_events, encode_events, encode_value
from maze.events.nodes import NodeCapacity, NodeJoined, NodeLeft, NodeLost
from maze.events.runs import LeaderElected, RunCreated
from maze.events.store import ensure_streams
from maze.events.tasks import AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.projections import db
from maze.projections.rebuild import compare, replayed, swap
from maze.projections.shards import Shards, shard_of
from tests.test_unit_rebuild import _lifelike_events, _live, _spec, _tables


def test_every_run_has_one_shard_and_leadership_goes_to_all() -> None:
    counts = [0, 0]
    for i in range(2_000):
        run_id = f"run_{i:08x}"
        shard = shard_of(subjects.RUNS_STREAM, subjects.run_subject(run_id), 2)
        assert shard == shard_of(subjects.RUNS_STREAM, subjects.report_subject(run_id, "node-a"), 2)
        assert shard == zlib.crc32(run_id.encode()) % 2, "the same in every process (not hash())"
        counts[shard] += 1
    assert min(counts) > 800, counts
    assert shard_of(subjects.RUNS_STREAM, subjects.LEADER_SUBJECT, 3) is None
    assert shard_of(subjects.NODES_STREAM, subjects.node_subject("n"), 3) == 0
    assert shard_of(subjects.NODES_STREAM, subjects.NODES_LEADER_SUBJECT, 3) == 0


def _subject(stream: str, event: object) -> str:
    if isinstance(event, LeaderElected):
        return subjects.LEADER_SUBJECT if stream == subjects.RUNS_STREAM else subjects.NODES_LEADER_SUBJECT
    if isinstance(event, NodeJoined):
        return subjects.node_subject(event.node_id)
    if isinstance(event, NodeLost):
        return subjects.node_head_subject(event.node_id)
    return subjects.run_subject(event.run_id)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("shards", "tight"), [(2, False), (3, False), (2, True)])
def test_the_shards_together_equal_the_fold_in_one_process(
    nats_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards: int, tight: bool
) -> None:
    """`tight`: every message is a batch of its own from the log (one request each) and goes to
    its shard alone, so the reading's and the hand-over's waits are taken at each message."""
    from maze.events import log_reader
    from maze.projections import rebuild
    from maze.projections import shards as shards_module

    monkeypatch.setattr(rebuild, "shard_count", lambda: shards)
    if tight:
        monkeypatch.setattr(log_reader, "FETCH_MSGS", 1)
        monkeypatch.setattr(shards_module, "SHARD_BATCH_BYTES", 1)
    events = _lifelike_events()

    async def scenario() -> tuple[dict, dict, list[str]]:
        nc = await nats.connect(nats_server.url)
        try:
            live, upto = await _published(await _empty_log(nc), events, tmp_path)
            rebuilt = db.open_db(tmp_path / "rebuilt.duckdb")
            async with replayed(nc, tmp_path, upto) as paths:
                assert len(paths) == shards
                sources = []
                for i, path in enumerate(paths):
                    rebuilt.execute(f"ATTACH '{path}' AS shard{i} (READ_ONLY)")
                    sources.append(f"shard{i}")
                per_shard = [rebuilt.execute(f"SELECT count(*) FROM {s}.runs").fetchone()[0] for s in sources]
                report = compare(rebuilt, sources)
                swap(rebuilt, sources)
                for source in sources:
                    rebuilt.execute(f"DETACH {source}")
            leftovers = [p.name for p in tmp_path.glob("bulk-*")]
            return live, {"report": report, "tables": _tables(rebuilt), "per_shard": per_shard}, leftovers
        finally:
            await nc.close()

    live, got, leftovers = asyncio.run(scenario())
    assert got["report"]["equal"] is False, "compared with an empty file first"
    assert got["tables"] == live, "the shards' rows and the furthest positions, as one process folds them"
    assert {r[3] for r in live["runs"]} == {"succeeded", "failed"}, "the late decisions were refused"
    assert sum(1 for n in got["per_shard"] if n) >= 2, f"the runs were spread: {got['per_shard']}"
    assert not leftovers, "the scratch folder is gone"
    assert not _shard_processes()


async def _empty_log(nc: nats.NATS) -> JetStreamContext:
    """The module's server's streams, made and emptied (sequences go on from the last test's)."""
    js = nc.jetstream()
    await ensure_streams(js)
    for stream in (subjects.RUNS_STREAM, subjects.NODES_STREAM):
        await js.purge_stream(stream)
    return js


async def _published(js: JetStreamContext, events: list, tmp_path: Path) -> tuple[dict, dict[str, int]]:
    """`events` written to the log, one a message: the live fold of them (its tables), and each
    stream's last sequence."""
    batches, upto = [], {}
    for stream, event in events:
        ack = await js.publish(_subject(stream, event), encode_events([event]))
        assert ack.stream == stream
        batches.append([(stream, ack.seq, [event])])
        upto[stream] = ack.seq
    return _live(tmp_path, batches), upto


def _swap_in(conn: duckdb.DuckDBPyConnection, paths: list[Path]) -> None:
    """The shards' files attached to `conn`, their rows swapped in, detached again."""
    sources = []
    for i, path in enumerate(paths):
        conn.execute(f"ATTACH '{path}' AS shard{i} (READ_ONLY)")
        sources.append(f"shard{i}")
    swap(conn, sources)
    for source in sources:
        conn.execute(f"DETACH {source}")


def _shard_processes() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "maze.projections.shard_main" in " ".join(p.cmdline())
    ]


def _fails(shards: Shards, upset: Callable[[Shards], None], error: type[Exception], match: str) -> None:
    """Start `shards`, `upset` them, and see their finish fail with `error`; nothing is left running."""

    async def scenario() -> None:
        try:
            shards.start()
            upset(shards)
            with pytest.raises(error, match=match):
                await shards.finish()
        finally:
            shards.close()

    asyncio.run(scenario())
    assert not _shard_processes()


def test_a_shard_that_dies_fails_the_rebuild_and_leaves_no_process(tmp_path: Path) -> None:
    def kill(shards: Shards) -> None:
        psutil.Process(shards._procs[1].pid).kill()

    _fails(Shards(tmp_path, 2), kill, Unavailable, "ended before its answer")


def test_a_shard_that_fails_says_why(tmp_path: Path) -> None:
    _fails(  # its file cannot be made
        Shards(tmp_path / "not-there", 1),
        lambda _: None,
        RuntimeError,
        r"a rebuild.s fold process failed: .*not-there",
    )


def _apart(shards: int) -> tuple[str, str]:
    """Two run ids that different shards fold."""
    first = "run_00000000"
    home = shard_of(subjects.RUNS_STREAM, subjects.run_subject(first), shards)
    other = next(
        run_id
        for run_id in (f"run_{i:08x}" for i in range(1, 100))
        if shard_of(subjects.RUNS_STREAM, subjects.run_subject(run_id), shards) != home
    )
    return first, other


def test_a_workers_events_stand_only_where_readers_look_for_them(
    nats_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker may write on its subject of any run (`maze.run.*.<node>`, `_leader` included). A
    report there on another run's attempt, or a session of its node there, is refused by every
    reader (maze/events/authority.py): a shard, chosen by the message's subject, would otherwise
    miss the other run's report, or several shards fold the session. The rebuild equals the live
    fold, which refuses them too; the same reports on the run's own subject stand."""
    from maze.projections import rebuild

    monkeypatch.setattr(rebuild, "shard_count", lambda: 2)
    here, there = _apart(2)
    key = {"run_id": there, "task_id": "t", "attempt": 1, "node_id": "n"}
    joined = NodeJoined(
        node_id="n",
        session="s",
        hostname="h",
        ip="1.2.3.4",
        capacity=NodeCapacity(cpus=2, memory_mb=1024),
        at_ms=1,
    )
    messages = [
        (
            subjects.run_subject(here),
            [RunCreated(run_id=here, workflow_id="wf-here", at_ms=1, tasks=[_spec("t")])],
        ),
        (
            subjects.run_subject(there),
            [RunCreated(run_id=there, workflow_id="wf-there", at_ms=2, tasks=[_spec("t")])],
        ),
        (subjects.run_subject(there), [AttemptPlaced(**key, at_ms=3, session="s", reason="fits")]),
        (subjects.report_subject(subjects.LEADER_RUN_ID, "n"), [joined]),
        (subjects.report_subject(here, "n"), [AttemptStarted(**key, at_ms=4)]),
        (
            subjects.report_subject(here, "n"),  # several events of other runs and of the node in one
            [
                AttemptSucceeded(**key, at_ms=5, result=encode_value({"y": 1})),
                NodeLeft(node_id="n", session="s", at_ms=6),
            ],
        ),
        (subjects.report_subject(there, "n"), [AttemptStarted(**key, at_ms=7)]),  # its own: stands
    ]

    async def scenario() -> tuple[dict, dict]:
        nc = await nats.connect(nats_server.url)
        try:
            js = await _empty_log(nc)
            batches = []
            for subject, events in messages:
                data = encode_events(events)
                ack = await js.publish(subject, data)
                # what the live projector folds: the message's events less what its writer may not write
                batches.append([(ack.stream, ack.seq, decode_events(data, subject=subject))])
            live = _live(tmp_path, batches)
            rebuilt = db.open_db(tmp_path / "rebuilt.duckdb")
            async with replayed(nc, tmp_path, {subjects.RUNS_STREAM: ack.seq}) as paths:
                _swap_in(rebuilt, paths)
            return live, _tables(rebuilt)
        finally:
            await nc.close()

    live, rebuilt = asyncio.run(scenario())
    assert [(r[0], r[5]) for r in live["tasks"]] == [(here, "pending"), (there, "running")]
    assert [r[6] for r in live["attempts"]] == ["running"], "started at 7 on its own subject, never succeeded"
    assert live["nodes"] == [], "a session on a run's subject is refused"
    assert rebuilt == live


def test_a_shard_that_fails_midway_says_why(tmp_path: Path) -> None:
    """A shard that fails on a batch answers and ends; the next batch handed to it finds it gone,
    and the rebuild fails with what it said, not only that it ended."""

    def break_it(shards: Shards) -> None:
        shards._pipes[0].send_bytes(b"\xc1")  # not msgpack: its fold fails on it
        shards._procs[0].wait(30)
        shards.add(subjects.RUNS_STREAM, 1, subjects.run_subject("run_1"), b"")

    _fails(Shards(tmp_path, 1), break_it, RuntimeError, "fold process failed: DecodeError")


def test_the_shards_end_with_a_rebuilding_process_killed_with_minus_9(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys, time\n"
        "from pathlib import Path\n"
        "from maze.projections.shards import Shards\n"
        "shards = Shards(Path(sys.argv[1]), 2)\n"
        "shards.start()\n"
        "print(' '.join(str(p.pid) for p in shards._procs), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        parent.kill()
        parent.wait()
        _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
        assert not alive, "the shards outlived the process that started them"
    finally:
        parent.kill()


def test_a_pools_shards_fold_the_next_rebuild_and_the_pool_is_filled_again(
    nats_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool (shards.py `ShardPool`) is filled after each rebuild that used it, in the background;
    the next rebuild's shards are those processes, told their jobs, and fold the same rows as fresh
    ones. One that died while it waited is replaced. Closing the pool ends every waiting one."""
    from maze.projections import rebuild
    from maze.projections import shards as shards_module
    from maze.projections.shards import ShardPool

    monkeypatch.setattr(rebuild, "shard_count", lambda: 2)
    started: list[int] = []
    spawn = shards_module.spawn

    def counted() -> shards_module.Shard:
        shard = spawn()
        started.append(shard.proc.pid)
        return shard

    monkeypatch.setattr(shards_module, "spawn", counted)
    events = _lifelike_events()
    pool = ShardPool(2)

    async def rebuilt_once(
        nc: nats.NATS, upto: dict[str, int], name: str
    ) -> tuple[dict, list[int], set[int]]:
        conn = db.open_db(tmp_path / f"{name}.duckdb")
        before = len(started)
        async with replayed(nc, tmp_path, upto, pool) as paths:
            fresh = started[before:]  # the shards this rebuild started itself
            children = {c.pid for c in psutil.Process().children()}  # zombies too: folded, not reaped
            _swap_in(conn, paths)
        return _tables(conn), fresh, children

    async def filled() -> list[int]:
        for _ in range(200):
            waiting = pool.waiting
            if len(waiting) == 2:
                return [s.proc.pid for s in waiting]
            await asyncio.sleep(0.05)
        raise AssertionError(f"the pool was not filled again: {len(pool.waiting)} waiting")

    async def scenario() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            live, upto = await _published(await _empty_log(nc), events, tmp_path)
            assert pool.waiting == [], "nothing is started before a rebuild asks"
            first, fresh, _ = await rebuilt_once(nc, upto, "first")
            assert first == live and len(fresh) == 2
            waiting = await filled()
            assert all(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in waiting)
            second, fresh, children = await rebuilt_once(nc, upto, "second")
            assert second == live
            assert fresh == [] and set(waiting) <= children, "the waiting shards folded the second rebuild"
            # one dies while it waits: the next rebuild starts another in its place
            waiting = await filled()
            killed = psutil.Process(waiting[0])
            killed.kill()
            for _ in range(200):  # dead (not yet reaped) before the rebuild takes the pool's shards
                if killed.status() == psutil.STATUS_ZOMBIE:
                    break
                await asyncio.sleep(0.01)
            third, fresh, children = await rebuilt_once(nc, upto, "third")
            assert third == live
            assert len(fresh) == 1 and waiting[1] in children and waiting[0] not in children
            await filled()
        finally:
            await nc.close()
            await asyncio.to_thread(pool.close)

    asyncio.run(scenario())
    assert pool.waiting == []
    assert not _shard_processes()
    pool.refill()
    assert pool.waiting == [], "a closed pool starts nothing"


def test_a_waiting_shard_let_go_of_ends_quietly() -> None:
    from maze.projections.shards import spawn

    shard = spawn()
    shard.pipe.close()
    assert shard.proc.wait(timeout=30) == 0, "no job, nothing to answer: code 0"


def test_a_heads_rebuilds_keep_shards_waiting_and_its_stop_ends_them(nats_server, tmp_path: Path) -> None:
    """The read models' process fills its pool after a rebuild (not before one is asked for); the
    next rebuild uses it; the head's stop (Ctrl-C) ends the waiting shards with it."""
    import httpx

    from tests.helpers import HeadProcess

    head = HeadProcess(tmp_path / "head", nats_url=nats_server.url, extra=["--no-local-worker"])
    head.start()

    def waiting() -> list[psutil.Process]:
        assert head.proc is not None
        found = []
        for p in psutil.Process(head.proc.pid).children(recursive=True):
            try:
                if (
                    "maze.projections.shard_main" in " ".join(p.cmdline())
                    and p.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(p)
            except psutil.NoSuchProcess:
                continue
        return found

    try:
        assert waiting() == [], "no shard is started before a rebuild is asked for"
        for _ in range(2):
            report = httpx.post(f"{head.url}/projections/rebuild", timeout=120).json()
            assert report["equal"] is True, report
            for _ in range(300):
                shards = waiting()
                if shards:
                    break
                time.sleep(0.05)
            assert shards, "the pool was filled after the rebuild"
        pids = [p.pid for p in shards]
    finally:
        assert head.stop() == 0, head.log()
    for _ in range(200):
        if not any(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"waiting shards outlived their head: {pids}")
