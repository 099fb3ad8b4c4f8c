"""Recording a wide run: run.created plus tasks.added chunks, each within max_payload, written once
even when a request is retried after a crash mid-submit (real nats-server, 1 MB max_payload)."""

from __future__ import annotations

import msgspec
import nats
import pytest

from maze.api.run_writer import _headers, chunk_events, record_run
from maze.core.errors import Conflict
from maze.events import subjects
from maze.events.codec import decode_events, encode_events
from maze.events.runs import RunCreated, RunFinished, TasksAdded
from maze.events.specs import InputValue, TaskSpec
from maze.events.store import ensure_streams, payload_budget, publish_durably
from tests.helpers import NatsServer


def _specs(n: int) -> list[TaskSpec]:
    return [
        TaskSpec(
            task_id=f"t{i:06d}",
            name="noop",
            func_name="noop",
            func_hash="a" * 64,
            call_style="kwargs",
            inputs={"x": InputValue(data=msgspec.msgpack.encode(i))},
            outputs=["x"],
        )
        for i in range(n)
    ]


def test_a_wide_run_is_cut_into_chunks_within_the_budget() -> None:
    specs = _specs(20_000)
    budget = 1024 * 1024 - 16 * 1024
    events = chunk_events("run_wide", "wf", specs, 1, budget)
    first, rest = events[0], events[1:]
    assert isinstance(first, RunCreated) and first.task_count == 20_000 and first.chunks == len(events) > 2
    assert all(isinstance(e, TasksAdded) for e in rest)
    assert [e.chunk for e in rest] == list(range(1, len(events)))  # type: ignore[union-attr]
    assert [t for e in events for t in e.tasks] == specs  # every task once, in order
    assert all(specs[e.offset] == e.tasks[0] for e in rest)  # type: ignore[union-attr]
    assert all(len(encode_events([e])) <= budget for e in events)
    small = chunk_events("run_small", "wf", specs[:3], 1, budget)
    assert len(small) == 1 and small[0].chunks == 1 and small[0].total_tasks == 3  # type: ignore[union-attr]


async def _run_messages(nc: nats.NATS, run_id: str) -> list[tuple[dict[str, str], list]]:
    js = nc.jetstream()
    out = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(
                subjects.RUNS_STREAM, seq=seq, subject=subjects.run_subject(run_id), next=True
            )
        except nats.js.errors.NotFoundError:
            return out
        out.append((dict(msg.headers or {}), decode_events(msg.data or b"")))
        seq = int(msg.seq or 0) + 1


async def test_a_retried_submit_writes_only_the_chunks_a_crash_left_out(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        events = chunk_events("run_resume", "wf", _specs(12_000), 1, payload_budget(nc))
        assert len(events) >= 4
        subject = subjects.run_subject("run_resume")
        # a head that died after writing run.created and the first chunk
        for i, event in enumerate(events[:2]):
            await publish_durably(js, subject, encode_events([event]), _headers(event, "body1", first=i == 0))
        last, duplicate = await record_run(js, events, "body1")
        assert duplicate is True
        stored = await _run_messages(nc, "run_resume")
        chunks = [e.chunk if isinstance(e, TasksAdded) else 0 for _, evs in stored for e in evs]
        assert chunks == list(range(len(events))), "every chunk exactly once"
        assert last == (await js.get_last_msg(subjects.RUNS_STREAM, subject)).seq
        again, duplicate = await record_run(js, events, "body1")
        assert duplicate is True and again == last
        assert len(await _run_messages(nc, "run_resume")) == len(events)
        with pytest.raises(Conflict, match="already exists"):
            await record_run(js, events, "another-body")
    finally:
        await nc.close()


async def test_a_run_that_ended_incomplete_cannot_be_resumed(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        events = chunk_events("run_gone", "wf", _specs(8_000), 1, payload_budget(nc))
        subject = subjects.run_subject("run_gone")
        await publish_durably(js, subject, encode_events([events[0]]), _headers(events[0], "b", first=True))
        ended = RunFinished(run_id="run_gone", at_ms=2, state="failed")
        await publish_durably(js, subject, encode_events([ended]), {"Maze-Event-Types": "run.finished"})
        with pytest.raises(Conflict, match="ended before all of its tasks were recorded"):
            await record_run(js, events, "b")
    finally:
        await nc.close()


async def test_a_task_of_only_blob_references_too_large_for_one_event_is_a_413() -> None:
    """Inputs that are blob references already cannot be spilled again: a task with too many of
    them is refused with payload_too_large naming it (it once crashed the handler with a 500)."""
    import pytest

    from maze.api.run_writer import fit_specs, spec_sizes
    from maze.core.errors import PayloadTooLarge
    from maze.events import values

    ref = values.wire_blob(values.BlobRef(sha256="b" * 64, size=10, codec="msgpack", type_name="bytes"))
    spec = msgspec.structs.replace(
        _specs(1)[0], inputs={f"in{i}": InputValue(data=ref) for i in range(15_000)}
    )
    specs = [spec]
    with pytest.raises(PayloadTooLarge) as caught:
        await fit_specs(specs, spec_sizes(specs), 1024 * 1024 - 16 * 1024, None)  # type: ignore[arg-type]
    assert caught.value.details["task_id"] == spec.task_id and "t000000" in caught.value.message
