"""A ReAct run's agent trace: a pure fold of its events as the API shows them (dicts, in log order,
maze/events/codec.py `event_to_builtins`). No clock, no I/O: the same log gives the same trace.

Each step is folded once, by its number: a decision, tool call or observation of a step that is
already there (a message stored twice) changes nothing, so the trace never shows a step twice.
"""

from __future__ import annotations

from typing import Any

TASK_EVENTS = {
    "attempt.started": "started_at_ms",
    "attempt.succeeded": "finished_at_ms",
    "attempt.failed": "finished_at_ms",
}


def fold_trace(run_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """`{"run_id", "kind", "state", "prompt", "max_steps", "task_timeout", "steps": [...], "final",
    "error"}`; each step `{"step", "decision": {task_id, kind, action, at_ms}, "tool_calls": [...],
    "observations": [...], "repair", "compactions": [...]}`, with each task's state and times."""
    trace: dict[str, Any] = {"run_id": run_id, "kind": None, "state": "running", "steps": [], "final": None}
    steps: dict[int, dict[str, Any]] = {}
    tasks: dict[str, dict[str, Any]] = {}

    def step_of(event: dict[str, Any]) -> dict[str, Any]:
        number = int(event["step"])
        return steps.setdefault(number, {"step": number})

    for event in events:
        kind = event.get("type")
        if any(k in event for k in ("refused", "malformed", "unknown_type")):
            continue  # shown refused in the history (a deposed leader's late step, say): not the run's
        if kind == "run.created":
            trace["kind"] = event.get("kind")
            agent = event.get("agent") or {}
            trace["prompt"] = agent.get("prompt")
            trace["max_steps"] = agent.get("max_steps")
            trace["task_timeout"] = agent.get("task_timeout")
            trace["tools"] = [t.get("name") for t in agent.get("tools") or []]
        elif kind == "agent.decision":
            step = step_of(event)
            if "decision" not in step:
                step["decision"] = {
                    "task_id": event["task_id"],
                    "kind": event["kind"],
                    "action": event.get("action"),
                    "at_ms": event["at_ms"],
                }
                step["decision_task"] = tasks.setdefault(event["task_id"], {"task_id": event["task_id"]})
        elif kind == "agent.tool_call":
            calls = step_of(event).setdefault("tool_calls", {})
            if event["call"] not in calls:
                task = tasks.setdefault(event["task_id"], {"task_id": event["task_id"]})
                calls[event["call"]] = {
                    "call": event["call"],
                    "tool": event["tool"],
                    "args": event.get("args"),
                    "task_id": event["task_id"],
                    "task": task,
                }
        elif kind == "agent.repair":
            step_of(event).setdefault("repair", event["message"])
        elif kind == "agent.observation":
            step_of(event).setdefault("observations", [o.get("entry") for o in event.get("observations", [])])
        elif kind == "agent.compaction":
            shown = step_of(event).setdefault("compactions", {})
            shown.setdefault(
                event["task_id"], {k: event.get(k) for k in ("task_id", "chars", "sha256", "keys")}
            )
        elif kind == "agent.final":
            if trace["final"] is None:
                trace["final"] = event.get("answer")
                trace["final_step"] = event["step"]
        elif kind == "run.finished" and trace["state"] == "running":
            trace["state"] = event["state"]
            trace["error"] = event.get("error")
        elif kind in TASK_EVENTS and event.get("task_id"):  # before or after the step naming it
            task = tasks.setdefault(event["task_id"], {"task_id": event["task_id"]})
            task["attempt"] = event.get("attempt")
            task[TASK_EVENTS[kind]] = event.get("at_ms")
            if kind != "attempt.started":
                task["state"] = "succeeded" if kind == "attempt.succeeded" else "failed"
    for number in sorted(steps):
        step = steps[number]
        if "tool_calls" in step:
            step["tool_calls"] = [step["tool_calls"][i] for i in sorted(step["tool_calls"])]
        if "compactions" in step:
            step["compactions"] = list(step["compactions"].values())
        trace["steps"].append(step)
    trace.setdefault("error", None)
    return trace
