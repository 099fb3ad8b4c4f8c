"""The original Maze result messages are made from history only: entries the API shows as
refused, malformed or of an unknown type are never taken as what happened."""

from __future__ import annotations

from maze.sdk.messages import events_to_messages, summarize


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
