"""The original Maze result messages (`start_task`, `finish_task`, `task_exception`,
`finish_workflow`) derived from a run's events, and their human-readable rendering."""

from __future__ import annotations

from typing import Any

ATTEMPT_ENDS = frozenset({"attempt.succeeded", "attempt.failed", "attempt.rejected", "attempt.lost"})
# how the API marks entries that are not history: a type this version cannot read, an event that
# does not decode, an event its writer may not write (a worker's forgery, a deposed leader's late
# write). They are shown so that nothing is hidden, and never counted as what happened.
NOT_HISTORY = ("refused", "malformed", "unknown_type")


def stands(event: dict[str, Any]) -> bool:
    """Whether an entry of a run's events is history (not refused, malformed or unknown)."""
    return not any(mark in event for mark in NOT_HISTORY)


def events_to_messages(workflow_id: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    finished: set[str] = set()
    ended: set[tuple[str, int]] = set()  # attempts whose first terminal event was seen (it wins)
    for event in events:
        if not stands(event):
            continue
        kind = event["type"]
        if kind in ("run.created", "tasks.added"):
            for task in event["tasks"]:
                if (
                    task.get("carried") is not None and task["task_id"] not in finished
                ):  # kept from a run retried
                    finished.add(task["task_id"])
                    messages.append(
                        {
                            "type": "finish_task",
                            "data": {
                                "workflow_id": workflow_id,
                                "task_id": task["task_id"],
                                "result": task["carried"],
                                "attempt": 0,
                            },
                        }
                    )
            continue
        if kind in ATTEMPT_ENDS:
            attempt = (event["task_id"], event["attempt"])
            if attempt in ended:
                continue  # a later report of an attempt already ended (e.g. lost, then a late success)
            ended.add(attempt)
        if kind == "attempt.started":
            messages.append(
                {
                    "type": "start_task",
                    "data": {
                        "workflow_id": workflow_id,
                        "task_id": event["task_id"],
                        "node_ip": event["node_ip"],
                        "node_id": event["node_id"],
                        "attempt": event["attempt"],
                    },
                }
            )
        elif kind == "attempt.succeeded" and event["task_id"] not in finished:
            finished.add(event["task_id"])
            messages.append(
                {
                    "type": "finish_task",
                    "data": {
                        "workflow_id": workflow_id,
                        "task_id": event["task_id"],
                        "result": event["result"],
                        "attempt": event["attempt"],
                    },
                }
            )
        elif kind == "retry.scheduled":
            messages.append(
                {
                    "type": "task_retry",
                    "data": {
                        "workflow_id": workflow_id,
                        "task_id": event["task_id"],
                        "next_attempt": event["next_attempt"],
                        "reason": event["reason"],
                        "delay_ms": event["delay_ms"],
                    },
                }
            )
        elif kind == "run.finished":
            error = event.get("error")
            if error is not None and event.get("failed_task_id"):
                messages.append(
                    {
                        "type": "task_exception",
                        "data": {
                            "workflow_id": workflow_id,
                            "task_id": event["failed_task_id"],
                            "result": error.get("traceback") or error.get("message"),
                            "error": error,
                        },
                    }
                )
            messages.append(
                {
                    "type": "finish_workflow",
                    "data": {"workflow_id": workflow_id, "run_id": event["run_id"], "state": event["state"]},
                }
            )
    return messages


def summarize(messages: list[dict[str, Any]]) -> dict[str, Any]:
    results = {m["data"]["task_id"]: m["data"]["result"] for m in messages if m["type"] == "finish_task"}
    failed = [m["data"]["task_id"] for m in messages if m["type"] == "task_exception"]
    final = next((m for m in messages if m["type"] == "finish_workflow"), None)
    return {
        "task_results": results,
        "workflow_completed": final is not None,
        "has_exception": bool(failed),
        "exception_tasks": failed,
        "state": final["data"]["state"] if final else None,
    }


def render(message: dict[str, Any], names: dict[str, str]) -> list[str]:
    data = message["data"]
    task_id = data.get("task_id", "")
    label = f"{names.get(task_id, '')} ({task_id[:13]})" if task_id else ""
    kind = message["type"]
    if kind == "start_task":
        return [f"▶ Task started: {label} on {data.get('node_id')}"]
    if kind == "finish_task":
        lines = [f"✓ Task completed: {label}"]
        lines += [f"   {k}: {v}" for k, v in (data["result"] or {}).items()]
        return lines
    if kind == "task_retry":
        return [f"↻ Task retrying: {label} (attempt {data['next_attempt']}, {data['reason']})"]
    if kind == "task_exception":
        error = data.get("error") or {}
        return [f"✗ Task failed: {label}: [{error.get('error_type')}] {error.get('message')}"]
    if kind == "finish_workflow":
        state = data.get("state")
        return ["✅ Workflow execution completed!" if state == "succeeded" else f"❌ Workflow ended {state}"]
    return []
