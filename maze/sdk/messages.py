"""The original Maze result messages (`start_task`, `finish_task`, `task_exception`,
`finish_workflow`) derived from a run's events, and their human-readable rendering."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from maze.core.task_machine import lost_error
from maze.events.tasks import AttemptLost

NODE_REPORTS = frozenset(
    {"attempt.started", "attempt.succeeded", "attempt.failed", "attempt.rejected", "artifact.registered"}
)
ATTEMPT_ENDS = frozenset({"attempt.succeeded", "attempt.failed", "attempt.rejected", "attempt.lost"})
# how the API marks entries that are not history: a type this version cannot read, an event that
# does not decode, an event its writer may not write (a worker's forgery, a deposed leader's late
# write). They are shown so that nothing is hidden, and never counted as what happened.
NOT_HISTORY = ("refused", "malformed", "unknown_type")


def stands(event: dict[str, Any]) -> bool:
    """Whether an entry of a run's events is history (not refused, malformed or unknown)."""
    return not any(mark in event for mark in NOT_HISTORY)


class MessageStream:
    """Turns a run's events, in log order, into result messages as they come (`feed`), so that a
    reader can show each one when it happens.

    A task whose attempt failed gets its `task_exception` once it is known that no retry follows:
    at its `retry.scheduled` the failure is dropped (a `task_retry` says so), at `run.finished`
    every failure still standing is sent, in the order they happened, before `finish_workflow`.
    So a run where several tasks failed before it ended sends one `task_exception` for each. Tasks
    of the run that neither succeeded nor failed are named in `finish_workflow` as
    `cancelled_tasks` (they never ran, or were stopped because the run ended first: cancelled,
    timed out, or failed by another task; an attempt the controller ended `cancelled` is no
    failure of its task)."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.finished: set[str] = set()
        self.ended: set[tuple[str, int]] = set()  # attempts whose first terminal event was seen (it wins)
        self.started: set[tuple[str, int]] = set()
        self.failures: dict[str, dict[str, Any]] = {}  # task -> its latest failure, retry unknown yet
        self.failed: set[str] = set()  # tasks sent as task_exception
        self.tasks: dict[str, str] = {}  # task id -> name, from the run's own record
        self.placed: dict[tuple[str, int], str] = {}  # attempt -> the node it was placed on

    def _foreign(self, event: dict[str, Any]) -> bool:
        if event["type"] == "attempt.failed":
            error = event.get("error") or {}
            if error.get("origin") == "controller" or event.get("epoch"):
                return False  # decided by the controller
        placed = self.placed.get((event["task_id"], event["attempt"]))
        return placed is not None and event.get("node_id") != placed

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The messages this event makes (often none)."""
        if not stands(event):
            return []
        kind: str = event["type"]
        if kind in ("run.created", "tasks.added"):
            return self._tasks(event)
        if kind == "attempt.placed":
            self.placed[(event["task_id"], event["attempt"])] = event["node_id"]
        elif kind in NODE_REPORTS and self._foreign(event):
            return []  # a node's word on an attempt placed elsewhere is no report (as in every fold)
        if kind in ATTEMPT_ENDS:
            attempt = (event["task_id"], event["attempt"])
            if attempt in self.ended:
                return []  # a later report of an attempt already ended (e.g. lost, then a late success)
            if kind == "attempt.lost" and attempt not in self.started:
                return []  # lost before it started: placed again, no failure
            self.ended.add(attempt)
        wf = self.workflow_id
        if kind == "attempt.started":
            self.started.add((event["task_id"], event["attempt"]))
            data = {
                "workflow_id": wf,
                "task_id": event["task_id"],
                "node_ip": event["node_ip"],
                "node_id": event["node_id"],
                "attempt": event["attempt"],
            }
            return [{"type": "start_task", "data": data}]
        elif kind == "attempt.succeeded" and event["task_id"] not in self.finished:
            self.finished.add(event["task_id"])
            self.failures.pop(event["task_id"], None)
            data = {
                "workflow_id": wf,
                "task_id": event["task_id"],
                "result": event["result"],
                "attempt": event["attempt"],
            }
            return [{"type": "finish_task", "data": data}]
        elif kind == "attempt.failed":
            if event["error"].get("error_type") != "cancelled":  # stopped by its run's end: not a failure
                self.failures[event["task_id"]] = event["error"]
        elif kind == "attempt.lost":
            lost = lost_error(msgspec.convert(event, AttemptLost))
            self.failures[event["task_id"]] = msgspec.to_builtins(lost)
        elif kind == "retry.scheduled":
            self.failures.pop(event["task_id"], None)
            data = {
                "workflow_id": wf,
                "task_id": event["task_id"],
                "next_attempt": event["next_attempt"],
                "reason": event["reason"],
                "delay_ms": event["delay_ms"],
            }
            return [{"type": "task_retry", "data": data}]
        elif kind == "run.finished":
            return self._finished(event)
        return []

    def _tasks(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """A chunk of the run's tasks: their names, and a `finish_task` for each task that keeps
        the result it had in the run this one retries (`carried`; a run retried with failed_only)."""
        out = []
        for spec in event.get("tasks") or []:
            task_id = spec["task_id"]
            self.tasks[task_id] = spec.get("name") or task_id
            if spec.get("carried") is not None and task_id not in self.finished:
                self.finished.add(task_id)
                data = {
                    "workflow_id": self.workflow_id,
                    "task_id": task_id,
                    "result": spec["carried"],
                    "attempt": 0,
                }
                out.append({"type": "finish_task", "data": data})
        return out

    def _finished(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        error = event.get("error")
        failed_task = event.get("failed_task_id")
        if error is not None and failed_task:
            self.failures.setdefault(failed_task, error)  # the run's own word on why it failed
        for task_id, failure in self.failures.items():
            out.append(self._exception(task_id, error if task_id == failed_task and error else failure))
            self.failed.add(task_id)
        self.failures = {}
        cancelled = [t for t in self.tasks if t not in self.finished and t not in self.failed]
        data = {
            "workflow_id": self.workflow_id,
            "run_id": event["run_id"],
            "state": event["state"],
            "cancelled_tasks": cancelled,
        }
        out.append({"type": "finish_workflow", "data": data})
        return out

    def _exception(self, task_id: str, error: dict[str, Any]) -> dict[str, Any]:
        data = {
            "workflow_id": self.workflow_id,
            "task_id": task_id,
            "result": error.get("traceback") or error.get("message"),
            "error": error,
        }
        return {"type": "task_exception", "data": data}


def events_to_messages(workflow_id: str, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    stream = MessageStream(workflow_id)
    return [message for event in events for message in stream.feed(event)]


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
        "cancelled_tasks": list(final["data"].get("cancelled_tasks") or []) if final else [],
    }


def render(message: dict[str, Any], names: dict[str, str]) -> list[str]:
    data = message["data"]
    task_id = data.get("task_id", "")

    def label(task: str) -> str:
        return f"{names.get(task, '')} ({task[:13]})"

    kind = message["type"]
    if kind == "start_task":
        return [f"▶ Task started: {label(task_id)} on {data.get('node_id')}"]
    if kind == "finish_task":
        lines = [f"✓ Task completed: {label(task_id)}"]
        lines += [f"   {k}: {v}" for k, v in (data["result"] or {}).items()]
        return lines
    if kind == "task_retry":
        return [f"↻ Task retrying: {label(task_id)} (attempt {data['next_attempt']}, {data['reason']})"]
    if kind == "task_exception":
        error = data.get("error") or {}
        return [f"✗ Task failed: {label(task_id)}: [{error.get('error_type')}] {error.get('message')}"]
    if kind == "finish_workflow":
        state = data.get("state")
        lines = [
            f"⊘ Task cancelled: {label(task)}: not run to its end, the run ended {state} first"
            for task in data.get("cancelled_tasks") or []
        ]
        ending = "✅ Workflow execution completed!" if state == "succeeded" else f"❌ Workflow ended {state}"
        return [*lines, f"{ending} (run {data.get('run_id')})"]
    return []
