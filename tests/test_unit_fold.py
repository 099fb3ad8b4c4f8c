"""Folds are pure: the same events give the same rows, in any batching, replays included."""

from __future__ import annotations

import msgspec

from maze.events.codec import decode_events, encode_events, encode_value
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputRef, InputValue, TaskError, TaskSpec
from maze.events.tasks import AttemptFailed, AttemptPlaced, AttemptStarted, AttemptSucceeded, RetryScheduled
from maze.head.run_state import apply_attempt_event, new_run, ready_tasks
from maze.projections.fold import create_run, fold_run_event, summarize


def _history() -> list:
    a = TaskSpec(
        task_id="a",
        name="a",
        func_name="f",
        func_hash="h",
        call_style="kwargs",
        inputs={"x": InputValue(data=encode_value(1))},
        outputs=["y"],
    )
    b = TaskSpec(
        task_id="b",
        name="b",
        func_name="f",
        func_hash="h",
        call_style="kwargs",
        inputs={"x": InputRef(task_id="a", key="y")},
        outputs=["y"],
    )
    lost = TaskError(error_type="node_lost", message="gone", retryable=True)
    return [
        RunCreated(run_id="r", workflow_id="w", at_ms=1, tasks=[a, b], functions={"h": b"f"}),
        AttemptPlaced(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=2, session="s1"),
        AttemptStarted(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=3),
        AttemptFailed(run_id="r", task_id="a", attempt=1, at_ms=4, error=lost, node_id="n"),
        RetryScheduled(run_id="r", task_id="a", next_attempt=2, at_ms=4),
        AttemptPlaced(run_id="r", task_id="a", attempt=2, node_id="n", at_ms=5, session="s2"),
        AttemptStarted(run_id="r", task_id="a", attempt=2, node_id="n", at_ms=6),
        AttemptSucceeded(
            run_id="r", task_id="a", attempt=2, node_id="n", at_ms=7, result=encode_value({"y": 2})
        ),
        # a late duplicate terminal event for the same attempt must change nothing
        AttemptFailed(run_id="r", task_id="a", attempt=2, at_ms=8, error=lost),
        AttemptPlaced(run_id="r", task_id="b", attempt=1, node_id="n", at_ms=9, session="s2"),
        AttemptStarted(run_id="r", task_id="b", attempt=1, node_id="n", at_ms=10),
        AttemptSucceeded(
            run_id="r", task_id="b", attempt=1, node_id="n", at_ms=11, result=encode_value({"y": 3})
        ),
        RunFinished(run_id="r", at_ms=12, state="succeeded"),
    ]


def _project(events: list) -> dict:
    model = create_run(events[0])
    for event in events[1:]:
        fold_run_event(model, event)
    summarize(model)
    return msgspec.to_builtins(
        {
            "run": model.run,
            "tasks": model.tasks,
            "attempts": {f"{k[0]}/{k[1]}": v for k, v in model.attempts.items()},
        }
    )


def test_projection_fold_is_deterministic_and_idempotent() -> None:
    events = _history()
    first = _project(events)
    assert first == _project(decode_events(encode_events(events)))  # survives the wire
    assert first["run"]["state"] == "succeeded" and first["run"]["tasks_succeeded"] == 2
    assert first["tasks"]["a"]["state"] == "succeeded" and first["tasks"]["a"]["attempt"] == 2
    assert first["attempts"]["a/1"]["state"] == "failed" and first["attempts"]["a/2"]["state"] == "succeeded"
    # replaying a duplicate of any event leaves the rows as they were
    doubled = [events[0]] + [e for e in events[1:] for _ in range(2)]
    assert _project(doubled) == first


def test_controller_fold_readiness() -> None:
    events = _history()
    run = new_run(events[0])
    assert ready_tasks(run) == ["a"]
    became_ready = []
    for event in events[1:-1]:
        became_ready += apply_attempt_event(run, event)
        if event is events[7]:  # a succeeded: its result is kept, raw, for its reader b
            assert run.tasks["a"].result == {"y": encode_value(2)}
    assert became_ready == ["b"]
    # b, a's only reader, succeeded: a's result is freed
    assert run.remaining == 0 and run.tasks["a"].result is None


def test_unknown_event_tag_is_skipped() -> None:
    known = RunFinished(run_id="r", at_ms=1, state="succeeded")
    data = msgspec.msgpack.encode([{"type": "from.the.future", "x": 1}, known])
    assert decode_events(data) == [known]
