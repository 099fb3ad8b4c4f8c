"""The original Maze result messages are made from history only: entries the API shows as
refused, malformed or of an unknown type are never taken as what happened."""

from __future__ import annotations

from maze.sdk.messages import events_to_messages, render, summarize


def test_refused_malformed_and_unknown_entries_are_not_history() -> None:
    events = [
        {"type": "attempt.started", "seq": 2, "task_id": "a", "attempt": 1, "node_id": "n", "node_ip": "1"},
        # a deposed leader's late end of the run, and a worker's forged success: shown, refused
        {"type": "run.finished", "seq": 3, "refused": "written under epoch 1, after epoch 2 was elected"},
        {"type": "attempt.succeeded", "seq": 4, "refused": "a worker may not write this here"},
        {"type": "attempt.failed", "seq": 5, "malformed": "Expected `int`, got `str`"},
        {"type": "attempt.shiny", "seq": 6, "unknown_type": True},
        {"type": "attempt.succeeded", "seq": 7, "task_id": "a", "attempt": 1, "result": {"x": 1}},
        {"type": "run.finished", "seq": 8, "run_id": "r", "state": "succeeded", "error": None},
    ]
    messages = events_to_messages("wf", events)
    assert [m["type"] for m in messages] == ["start_task", "finish_task", "finish_workflow"]
    summary = summarize(messages)
    assert summary["task_results"] == {"a": {"x": 1}}
    assert messages[-1]["data"]["state"] == "succeeded"


def _spec(task_id: str) -> dict:
    return {"task_id": task_id, "name": f"name_{task_id}"}


def _failed(task_id: str, attempt: int, seq: int, error_type: str = "user_code") -> dict:
    error = {"error_type": error_type, "message": f"{task_id} broke", "traceback": f"Traceback {task_id}"}
    return {"type": "attempt.failed", "seq": seq, "task_id": task_id, "attempt": attempt, "error": error}


def _started(task_id: str, attempt: int, seq: int) -> dict:
    return {
        "type": "attempt.started",
        "seq": seq,
        "task_id": task_id,
        "attempt": attempt,
        "node_id": "n",
        "node_ip": "1",
    }


def test_every_task_that_failed_gets_its_task_exception_and_cancelled_tasks_are_named() -> None:
    events = [
        {"type": "run.created", "seq": 1, "run_id": "r", "tasks": [_spec(t) for t in ("a", "b", "c", "d")]},
        _started("a", 1, 2),
        _started("b", 1, 3),
        _started("c", 1, 4),
        _failed("c", 1, 5),  # retried: not an exception of the run
        {
            "type": "retry.scheduled",
            "seq": 6,
            "task_id": "c",
            "next_attempt": 2,
            "reason": "user_code",
            "delay_ms": 0,
        },
        _failed("a", 1, 7),
        _failed("b", 1, 8, "timed_out"),  # failed before the run's end was decided: reported too
        {
            "type": "run.finished",
            "seq": 9,
            "run_id": "r",
            "state": "failed",
            "failed_task_id": "a",
            "error": {"error_type": "user_code", "message": "a broke", "traceback": "Traceback a"},
        },
    ]
    messages = events_to_messages("wf", events)
    kinds = [m["type"] for m in messages]
    assert kinds == [*["start_task"] * 3, "task_retry", "task_exception", "task_exception", "finish_workflow"]
    assert [m["data"]["task_id"] for m in messages if m["type"] == "task_exception"] == ["a", "b"]
    assert messages[5]["data"]["error"]["error_type"] == "timed_out"
    assert messages[-1]["data"]["cancelled_tasks"] == ["c", "d"]  # c was waiting to retry, d never ran
    summary = summarize(messages)
    assert summary["exception_tasks"] == ["a", "b"] and summary["cancelled_tasks"] == ["c", "d"]
    lines = [line for m in messages for line in render(m, {"d": "last"})]
    assert any(line.startswith("⊘ Task cancelled: last (d)") for line in lines)
    assert lines[-1] == "❌ Workflow ended failed (run r)"


def test_a_started_attempt_lost_with_its_node_is_a_failure_one_lost_before_it_started_is_not() -> None:
    lost = {"type": "attempt.lost", "node_id": "n1", "session": "s1", "at_ms": 0, "run_id": "r"}
    events = [
        {"type": "run.created", "seq": 1, "run_id": "r", "tasks": [_spec("a"), _spec("b")]},
        {**lost, "seq": 2, "task_id": "b", "attempt": 1},  # never started: placed again
        _started("a", 1, 3),
        {**lost, "seq": 4, "task_id": "a", "attempt": 1},
        {"type": "run.finished", "seq": 5, "run_id": "r", "state": "failed", "error": None},
    ]
    messages = events_to_messages("wf", events)
    exceptions = [m["data"] for m in messages if m["type"] == "task_exception"]
    assert [e["task_id"] for e in exceptions] == ["a"]
    assert exceptions[0]["error"]["error_type"] == "node_lost" and "n1" in exceptions[0]["result"]
    assert messages[-1]["data"]["cancelled_tasks"] == ["b"]


def test_a_task_carried_from_the_run_retried_is_finished_with_its_kept_result() -> None:
    events = [
        {
            "type": "run.created",
            "seq": 1,
            "run_id": "r",
            "tasks": [{**_spec("a"), "carried": {"x": 1}}, _spec("b")],
        },
        _started("b", 1, 2),
        {"type": "attempt.succeeded", "seq": 3, "task_id": "b", "attempt": 1, "result": {"y": 2}},
        {"type": "run.finished", "seq": 4, "run_id": "r", "state": "succeeded", "error": None},
    ]
    messages = events_to_messages("wf", events)
    assert [m["type"] for m in messages] == ["finish_task", "start_task", "finish_task", "finish_workflow"]
    assert messages[0]["data"] == {"workflow_id": "wf", "task_id": "a", "result": {"x": 1}, "attempt": 0}
    assert messages[-1]["data"]["cancelled_tasks"] == []


def test_attempts_stopped_by_the_runs_end_are_cancelled_tasks_not_exceptions() -> None:
    stopped = {"error_type": "cancelled", "message": "stopped: the run ended cancelled (cancelled: enough)"}
    events = [
        {"type": "run.created", "seq": 1, "run_id": "r", "tasks": [_spec("a"), _spec("b")]},
        _started("a", 1, 2),
        {"type": "attempt.failed", "seq": 3, "task_id": "a", "attempt": 1, "error": stopped},
        {"type": "run.finished", "seq": 3, "run_id": "r", "state": "cancelled", "error": stopped},
    ]
    messages = events_to_messages("wf", events)
    assert [m["type"] for m in messages] == ["start_task", "finish_workflow"]
    assert messages[-1]["data"]["cancelled_tasks"] == ["a", "b"]
    assert summarize(messages)["has_exception"] is False
