"""The in-process run feeds (maze/head/feeds.py): what a live SSE stream is served from."""

from __future__ import annotations

import asyncio

import pytest

from maze.events.codec import Decoded
from maze.events.runs import RunCreated, RunFinished
from maze.events.tasks import AttemptStarted
from maze.head import feeds as feeds_module
from maze.head.feeds import FeedDropped, RunFeeds

SUBJECT = "maze.run.run_a"


def created() -> Decoded:
    return Decoded([RunCreated(run_id="run_a", workflow_id="w", at_ms=1, tasks=[])], [], [])


def started() -> Decoded:
    event = AttemptStarted(run_id="run_a", task_id="t", attempt=1, node_id="n", at_ms=2, node_ip="", pid=1)
    return Decoded([event], [], [])


def finished() -> Decoded:
    return Decoded([RunFinished(run_id="run_a", at_ms=3, state="succeeded")], [], [])


async def collect(feeds: RunFeeds, after: int = 0) -> list[int]:
    live = feeds.follow("run_a", after)
    assert live is not None
    return [entry.seq async for batch in live for entry in batch]


async def test_backlog_then_live_without_gaps_or_repeats() -> None:
    feeds = RunFeeds()
    feeds.note(SUBJECT, 3, created(), 10)
    feeds.note(SUBJECT, 5, started(), 10)
    reader = asyncio.create_task(collect(feeds))
    await asyncio.sleep(0)
    feeds.note(SUBJECT, 5, started(), 10)  # a replay after a controller restart: repeated
    feeds.note(SUBJECT, 8, finished(), 10)
    assert await asyncio.wait_for(reader, 1) == [3, 5, 8]
    assert await collect(feeds, after=5) == [8]  # resuming (Last-Event-ID)
    assert not feeds.feeds["run_a"].listeners  # readers leave nothing behind


async def test_runs_not_seen_from_their_start_are_read_from_the_log() -> None:
    feeds = RunFeeds()
    feeds.note(SUBJECT, 4, started(), 10)
    assert feeds.follow("run_a", 0) is None
    assert feeds.follow("run_other", 0) is None
    assert feeds.stats()["read_from_log"] == 2
    assert feeds.position == 4


async def test_a_feed_past_its_byte_bound_hands_readers_to_the_log() -> None:
    feeds = RunFeeds()
    feeds.note(SUBJECT, 1, created(), 10)
    live = feeds.follow("run_a", 0)
    assert live is not None
    assert [e.seq for e in await live.__anext__()] == [1]
    feeds.note(SUBJECT, 2, started(), feeds_module.FEED_MAX_BYTES)
    # the entry that broke the bound was handed over before the drop: nothing is skipped
    assert [e.seq for e in await live.__anext__()] == [2]
    with pytest.raises(FeedDropped):
        await live.__anext__()
    assert feeds.follow("run_a", 0) is None


async def test_ended_feeds_are_kept_for_a_while_then_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds_module, "ENDED_KEPT", 2)
    feeds = RunFeeds()
    for i in range(4):
        subject = f"maze.run.run_{i}"
        feeds.note(subject, 10 * i + 1, created(), 10)
        feeds.note(subject, 10 * i + 2, finished(), 10)
    assert sorted(feeds.feeds) == ["run_2", "run_3"]
    monkeypatch.setattr(feeds_module, "ENDED_KEPT_S", 0.0)
    feeds._expire()
    assert feeds.feeds == {}


async def test_reach_waits_for_the_controller_and_is_bounded() -> None:
    feeds = RunFeeds()
    waiter = asyncio.create_task(feeds.reach(7, timeout=1.0))
    await asyncio.sleep(0)
    feeds.note(SUBJECT, 7, created(), 10)
    assert await waiter is True
    assert await feeds.reach(100, timeout=0.05) is False


async def test_resuming_past_what_the_feed_holds_repeats_nothing() -> None:
    feeds = RunFeeds()
    feeds.note(SUBJECT, 1, created(), 10)
    # a client that read up to 6 from the log while the controller was behind
    reader = asyncio.create_task(collect(feeds, after=6))
    await asyncio.sleep(0)
    feeds.note(SUBJECT, 6, started(), 10)
    feeds.note(SUBJECT, 9, finished(), 10)
    assert await asyncio.wait_for(reader, 1) == [9]
    assert await collect(feeds, after=9) == []  # ended at or before `after`: ends at once


async def test_what_is_there_at_once_comes_as_one_batch_and_ends_with_the_run() -> None:
    feeds = RunFeeds()
    feeds.note(SUBJECT, 1, created(), 10)
    live = feeds.follow("run_a", 0)
    assert live is not None
    assert [e.seq for e in await live.__anext__()] == [1]
    feeds.note(SUBJECT, 2, started(), 10)
    feeds.note(SUBJECT, 3, finished(), 10)
    batch = await live.__anext__()
    assert [e.seq for e in batch] == [2, 3] and batch[-1].finished
    with pytest.raises(StopAsyncIteration):
        await live.__anext__()


async def test_a_reader_that_never_starts_registers_nothing() -> None:
    feeds = RunFeeds()
    feeds.note(SUBJECT, 1, created(), 10)
    assert feeds.follow("run_a", 0) is not None
    assert not feeds.feeds["run_a"].listeners


async def test_all_feeds_stay_within_the_total_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds_module, "TOTAL_MAX_BYTES", 100)
    feeds = RunFeeds()
    feeds.note("maze.run.run_done", 1, created(), 30)
    feeds.note("maze.run.run_done", 2, finished(), 10)
    feeds.note("maze.run.run_live", 3, created(), 30)
    feeds.note("maze.run.run_new", 4, created(), 40)  # 110 bytes: the ended run goes first
    assert sorted(feeds.feeds) == ["run_live", "run_new"]
    assert feeds.bytes == 70


def test_a_sound_message_decodes_into_a_whole_decoded() -> None:
    """decode_message makes its usual answer with tuple.__new__ (no NamedTuple constructor): it
    must equal the one the constructor makes, every field of it."""
    from maze.events.codec import decode_message, encode_events, with_authority

    event = RunFinished(run_id="r", state="succeeded", at_ms=1)
    decoded = decode_message(encode_events([event]))
    assert decoded == Decoded([event], [], [], []) and len(decoded) == len(Decoded._fields)
    assert (decoded.events, decoded.unknown, decoded.malformed, decoded.refused) == ([event], [], [], [])
    assert with_authority(decoded, "maze.run.r") is decoded, "the head's subject: all of it stands"
