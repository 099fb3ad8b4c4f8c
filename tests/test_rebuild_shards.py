"""A rebuild's fold split over processes (maze/projections/shards.py): every run in exactly one shard,
leadership in all of them; the shards' files together equal the fold of the same log in one
process (a deposed leader's late decisions refused in every shard); a shard that fails or dies
fails the rebuild with what happened, and leaves no process and no file behind."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import nats
import psutil
import pytest

from maze.core.errors import Unavailable
from maze.events import subjects
from maze.events.codec import encode_events
from maze.events.nodes import NodeJoined, NodeLost
from maze.events.runs import LeaderElected
from maze.projections import db
from maze.projections.rebuild import compare, replayed, swap
from maze.projections.shards import Shards, shard_of
from tests.test_unit_rebuild import _lifelike_events, _live, _tables


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
    """`tight`: every message waits for room (read-ahead of one byte) and goes to its shard alone,
    so the delivery's and the hand-over's waits are taken at each message."""
    from maze.events.store import ensure_streams
    from maze.projections import rebuild
    from maze.projections import shards as shards_module

    monkeypatch.setattr(rebuild, "shard_count", lambda: shards)
    if tight:
        monkeypatch.setattr(rebuild, "READ_AHEAD_BYTES", 1)
        monkeypatch.setattr(shards_module, "SHARD_BATCH_BYTES", 1)
    events = _lifelike_events()

    async def scenario() -> tuple[dict, dict, list[str]]:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            for stream in (subjects.RUNS_STREAM, subjects.NODES_STREAM):
                await js.purge_stream(stream)
            batches, upto = [], {}
            for stream, event in events:
                ack = await js.publish(_subject(stream, event), encode_events([event]))
                assert ack.stream == stream
                batches.append([(stream, ack.seq, [event])])
                upto[stream] = ack.seq
            live = _live(tmp_path, batches)
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


def _shard_processes() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "maze.projections.shards" in " ".join(p.cmdline())
    ]


def test_a_shard_that_dies_fails_the_rebuild_and_leaves_no_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        shards = Shards(tmp_path, 2)
        try:
            shards.start()
            psutil.Process(shards._procs[1].pid).kill()
            with pytest.raises(Unavailable, match="ended before its answer"):
                await shards.finish()
        finally:
            shards.close()

    asyncio.run(scenario())
    assert not _shard_processes()


def test_a_shard_that_fails_says_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        shards = Shards(tmp_path / "not-there", 1)  # its file cannot be made
        try:
            shards.start()
            with pytest.raises(RuntimeError, match=r"a rebuild.s fold process failed: .*not-there"):
                await shards.finish()
        finally:
            shards.close()

    asyncio.run(scenario())
    assert not _shard_processes()
