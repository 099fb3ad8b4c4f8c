"""Pure folds: (model, event) -> model. No clock, no I/O, no random ids: replaying the same
events always gives the same rows."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from msgspec import Struct, field

from maze.events.catalog import Event
from maze.events.codec import decode_value
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputRef, TaskError
from maze.events.tasks import (
    AttemptFailed,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)
from maze.events.values import describe, describe_map

Row = dict[str, Any]
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(msgspec.to_builtins(value), sort_keys=True, default=repr)


class RunModel(Struct):
    """One run's rows: the run, its tasks and its attempts."""

    run: Row
    tasks: dict[str, Row] = field(default_factory=dict)
    attempts: dict[tuple[str, int], Row] = field(default_factory=dict)
    dirty_tasks: set[str] = field(default_factory=set)
    dirty_attempts: set[tuple[str, int]] = field(default_factory=set)


def _failure_state(error: TaskError) -> str:
    return "timed_out" if error.error_type == "timed_out" else "failed"


def create_run(event: RunCreated) -> RunModel:
    model = RunModel(
        run={
            "run_id": event.run_id,
            "workflow_id": event.workflow_id,
            "kind": event.kind,
            "state": "created",
            "created_at_ms": event.at_ms,
            "started_at_ms": None,
            "finished_at_ms": None,
            "task_count": len(event.tasks),
            "tasks_succeeded": 0,
            "tasks_failed": 0,
            "error": None,
            "failed_task_id": None,
        }
    )
    for spec in event.tasks:
        inputs = {
            name: (
                {"ref": f"{given.task_id}.output.{given.key}"}
                if isinstance(given, InputRef)
                else {"value": describe(decode_value(given.data))}
            )
            for name, given in spec.inputs.items()
        }
        model.tasks[spec.task_id] = {
            "run_id": event.run_id,
            "task_id": spec.task_id,
            "name": spec.name,
            "func_name": spec.func_name,
            "task_type": spec.task_type,
            "state": "pending",
            "attempt": 0,
            "node_id": None,
            "node_ip": None,
            "gpus": "[]",
            "resources": dumps(spec.resources),
            "inputs": dumps(inputs),
            "upstream": dumps(sorted(spec.upstream())),
            "outputs": dumps(spec.outputs),
            "result": None,
            "error": None,
            "placement_reason": None,
            "queued_at_ms": None,
            "started_at_ms": None,
            "finished_at_ms": None,
        }
        model.dirty_tasks.add(spec.task_id)
    return model


def fold_run_event(model: RunModel, event: Event) -> RunModel:
    """Apply one run-stream event (other than RunCreated) to a run's rows."""
    run = model.run
    if isinstance(event, RunFinished):
        if run["state"] in TERMINAL:
            return model
        run["state"] = event.state
        run["finished_at_ms"] = event.at_ms
        run["error"] = dumps(event.error)
        run["failed_task_id"] = event.failed_task_id
        for task in model.tasks.values():
            if task["state"] in ("pending", "retry_wait"):
                task["state"] = "cancelled"
                task["error"] = dumps(
                    TaskError(
                        error_type="cancelled",
                        message=f"not run: the run ended {event.state}"
                        + (f" (task {event.failed_task_id} failed)" if event.failed_task_id else ""),
                        origin="controller",
                    )
                )
                model.dirty_tasks.add(task["task_id"])
        return model
    if isinstance(event, RetryScheduled):
        task = model.tasks[event.task_id]
        if task["state"] in ("failed", "timed_out") and event.next_attempt > task["attempt"]:
            task["state"] = "retry_wait"
            model.dirty_tasks.add(event.task_id)
        return model
    task = model.tasks[event.task_id]  # type: ignore[union-attr]
    attempt_no: int = event.attempt  # type: ignore[union-attr]
    akey = (event.task_id, attempt_no)  # type: ignore[union-attr]
    attempt = model.attempts.get(akey)
    if attempt is None:
        attempt = {
            "run_id": run["run_id"],
            "task_id": task["task_id"],
            "attempt": attempt_no,
            "node_id": None,
            "node_ip": None,
            "pid": None,
            "state": "queued",
            "gpus": "[]",
            "reason": None,
            "error": None,
            "placed_at_ms": None,
            "started_at_ms": None,
            "finished_at_ms": None,
            "duration_ms": None,
        }
        model.attempts[akey] = attempt
    model.dirty_attempts.add(akey)
    model.dirty_tasks.add(task["task_id"])
    current = attempt_no >= task["attempt"] and task["state"] not in ("succeeded", "cancelled")
    if isinstance(event, AttemptPlaced):
        attempt.update(
            node_id=event.node_id, gpus=dumps(event.gpus), reason=event.reason, placed_at_ms=event.at_ms
        )
        if current:
            task.update(
                state="queued",
                attempt=attempt_no,
                node_id=event.node_id,
                gpus=dumps(event.gpus),
                placement_reason=event.reason,
                queued_at_ms=event.at_ms,
                error=None,
            )
        if run["state"] == "created":
            run["state"] = "running"
            run["started_at_ms"] = event.at_ms
    elif isinstance(event, AttemptStarted):
        if attempt["state"] == "queued":
            attempt.update(state="running")
        attempt.update(node_id=event.node_id, node_ip=event.node_ip, pid=event.pid, started_at_ms=event.at_ms)
        if current and task["state"] in ("pending", "queued"):
            task.update(
                state="running", node_id=event.node_id, node_ip=event.node_ip, started_at_ms=event.at_ms
            )
    elif isinstance(event, AttemptSucceeded):
        if attempt["state"] in TERMINAL:
            return model  # first terminal event per attempt wins
        attempt.update(
            state="succeeded",
            finished_at_ms=event.at_ms,
            duration_ms=event.duration_ms,
            node_id=event.node_id,
        )
        if current and task["attempt"] == attempt_no:
            task.update(
                state="succeeded",
                result=dumps(describe_map(event.result)[0]),
                finished_at_ms=event.at_ms,
                error=None,
            )
    elif isinstance(event, AttemptRejected):
        if attempt["state"] in TERMINAL or attempt["state"] == "rejected":
            return model
        attempt.update(state="rejected", reason=event.reason, finished_at_ms=event.at_ms)
        if current and task["attempt"] == attempt_no and task["state"] == "queued":
            task.update(state="pending", placement_reason=f"rejected by {event.node_id}: {event.reason}")
    elif isinstance(event, AttemptFailed):
        if attempt["state"] in TERMINAL:
            return model
        state = _failure_state(event.error)
        attempt.update(state=state, finished_at_ms=event.at_ms, error=dumps(event.error))
        if event.node_id and attempt["node_id"] is None:
            attempt["node_id"] = event.node_id
        if current and task["state"] not in TERMINAL:
            task.update(state=state, attempt=attempt_no, error=dumps(event.error), finished_at_ms=event.at_ms)
    return model


def summarize(model: RunModel) -> None:
    """Derived run counters; applied once per batch before the rows are written."""
    states = [t["state"] for t in model.tasks.values()]
    model.run["tasks_succeeded"] = states.count("succeeded")
    model.run["tasks_failed"] = states.count("failed") + states.count("timed_out")


def fold_node_event(node: Row | None, event: NodeJoined | NodeLeft | NodeLost) -> Row | None:
    if isinstance(event, NodeJoined):
        return {
            "node_id": event.node_id,
            "session": event.session,
            "hostname": event.hostname,
            "ip": event.ip,
            "state": "alive",
            "cpus": event.capacity.cpus,
            "memory_mb": event.capacity.memory_mb,
            "gpus": dumps(event.capacity.gpus),
            "joined_at_ms": event.at_ms,
            "left_at_ms": None,
        }
    if node is not None and node["session"] == event.session:
        node = dict(node)
        node.update(state="lost" if isinstance(event, NodeLost) else "left", left_at_ms=event.at_ms)
    return node
