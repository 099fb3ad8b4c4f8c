"""The worker's outbox against a real nats-server whose run stream refuses messages for good (its
`max_msg_size`): every error is classified, nothing is retried without end, nothing is lost in
silence."""

from __future__ import annotations

import asyncio

import nats
import pytest

from maze.events import subjects
from maze.events.codec import decode_events
from maze.events.store import EventStore, ensure_streams
from maze.events.tasks import AttemptFailed, AttemptStarted, AttemptSucceeded
from maze.workers.outbox import Outbox
from tests.helpers import NatsServer


async def _limit_run_messages(js: nats.js.JetStreamContext, max_bytes: int) -> None:
    info = await js.stream_info(subjects.RUNS_STREAM)
    info.config.max_msg_size = max_bytes
    await js.update_stream(info.config)


async def _stored(js: nats.js.JetStreamContext, run_id: str) -> list[object]:
    sub = await js.subscribe(subjects.run_subject(run_id), ordered_consumer=True)
    out: list[object] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1)
            out += decode_events(msg.data)
    except nats.errors.TimeoutError:
        return out
    finally:
        await sub.unsubscribe()


def _success(run_id: str, size: int) -> AttemptSucceeded:
    return AttemptSucceeded(
        run_id=run_id, task_id="t", attempt=1, node_id="n", at_ms=1, result=b"\x91" + b"x" * size
    )


@pytest.fixture
async def js(nats_server: NatsServer):  # type: ignore[no-untyped-def]
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    yield nc
    await _limit_run_messages(nc.jetstream(), -1)
    await nc.close()


async def test_a_result_the_store_refuses_becomes_a_small_failure(js: nats.NATS) -> None:
    await _limit_run_messages(js.jetstream(), 2048)
    outbox = Outbox(EventStore(js))
    outbox.start()
    outbox.emit(_success("run_refused", 8000))
    await asyncio.wait_for(outbox.drain(), 20)
    await outbox.stop()
    [stored] = await _stored(js.jetstream(), "run_refused")
    assert isinstance(stored, AttemptFailed) and stored.error.error_type == "event_store_refused"
    assert "maximum" in stored.error.message.lower() and stored.error.retryable


async def test_events_the_store_refuses_for_good_are_dropped_and_reported_not_retried(js: nats.NATS) -> None:
    await _limit_run_messages(js.jetstream(), 64)  # not even a small failure fits
    reported: list[tuple[int, BaseException]] = []
    outbox = Outbox(EventStore(js), lambda events, exc: reported.append((len(events), exc)))
    outbox.start()
    outbox.emit(AttemptStarted(run_id="run_never", task_id="t", attempt=1, node_id="n" * 80, at_ms=1))
    await asyncio.wait_for(outbox.drain(), 30)  # it ends: no retry loop
    await outbox.stop()
    assert outbox.dropped == 1 and len(reported) == 1 and reported[0][0] == 1
    assert await _stored(js.jetstream(), "run_never") == []
    # the store accepts again: the next events go through as usual
    await _limit_run_messages(js.jetstream(), -1)
    outbox = Outbox(EventStore(js))
    outbox.start()
    outbox.emit(_success("run_after", 100))
    await asyncio.wait_for(outbox.drain(), 20)
    await outbox.stop()
    assert [type(e) for e in await _stored(js.jetstream(), "run_after")] == [AttemptSucceeded]


async def test_an_emitter_learns_whether_its_event_was_stored_as_it_is(js: nats.NATS) -> None:
    """What a follower's reports wait for (maze/workers/follow.py): True once stored unchanged;
    False when the store took a failure in its place, or nothing."""
    outbox = Outbox(EventStore(js))
    outbox.start()
    loop = asyncio.get_running_loop()
    kept, plain = loop.create_future(), _success("run_watched", 100)
    outbox.emit(plain, kept)
    assert await asyncio.wait_for(kept, 20) is True
    await _limit_run_messages(js.jetstream(), 2048)
    replaced = loop.create_future()
    outbox.emit(_success("run_watched_refused", 8000), replaced)
    assert await asyncio.wait_for(replaced, 20) is False
    [stored] = await _stored(js.jetstream(), "run_watched_refused")
    assert isinstance(stored, AttemptFailed)
    await _limit_run_messages(js.jetstream(), 64)
    dropped = loop.create_future()
    outbox.emit(
        AttemptStarted(run_id="run_watched_never", task_id="t", attempt=1, node_id="n" * 80, at_ms=1), dropped
    )
    assert await asyncio.wait_for(dropped, 30) is False
    pending = loop.create_future()
    outbox.pending.append(plain)  # (as if emitted while the outbox stops)
    outbox._watched[id(plain)] = (plain, pending)
    await outbox.stop()
    assert pending.result() is False and outbox._watched == {}
