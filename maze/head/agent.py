"""The ReAct driver: what a ReAct run does next, decided by the run controller from the run's folded
state (maze/head/agent_state.py), never by its client. Pure: no I/O, no clock (`now` is given).

A step is a decision task, then the tool tasks it asks for:
- no step yet: append the decision task of step 1 (`s1-decide`);
- the decision task of step k succeeded: read its `action` output, record `agent.decision`, then
  - `{"final": answer}`: `agent.final`, and the run ends `succeeded` with the answer;
  - `{"tool": name, "args": {...}}` or `{"tools": [{"tool", "args"}, ...]}` (at most
    MAX_PARALLEL_CALLS, run in parallel): one `agent.tool_call` each, and their tasks appended,
    each after the decision task (so the workspace's files flow from step to step);
  - anything else (not JSON, not an object, an unknown tool, arguments that do not bind to the
    tool's signature): `agent.repair`, whose message the next decision task sees in its history;
  at step `max_steps`, anything but a final answer ends the run `failed` (`max_steps_exceeded`);
- the decision task failed for good (its retries spent): the run fails with its error;
- every tool task of step k ended (succeeded, or failed for good): `agent.observation` (each
  result as the agent sees it, compacted when long: maze/head/agent_observe.py, with an
  `agent.compaction` for each cut) and the decision task of step k+1, after the decision task of
  step k and the tool tasks that succeeded.
Everything a step decides goes in one message with the tasks it appends (one run, one message), so
the log holds all of it or none; the controller decides it again only if none is there.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from msgspec import Struct
from msgspec.msgpack import Ext

from maze.core.task_machine import FAILED
from maze.events.agents import (
    AgentCompacted,
    AgentDecided,
    AgentFinal,
    AgentObserved,
    AgentRepair,
    AgentSpec,
    AgentTool,
    AgentToolCall,
    Observation,
)
from maze.events.catalog import Event
from maze.events.codec import encode_value
from maze.events.runs import TaskAppended
from maze.events.specs import InputValue, TaskError, TaskSpec
from maze.events.values import URI_PREFIX, blob_ref_for, decode_opaque, wire_blob
from maze.head.agent_observe import observe
from maze.head.agent_state import AgentState, call_id, decide_id, repair_entry
from maze.head.retry import next_attempt_delay_ms
from maze.head.run_state import RunRuntime, TaskRuntime

MAX_PARALLEL_CALLS = 8  # tool calls one decision may ask for at once
ACTION_SHOWN_BYTES = 16 * 1024  # an action longer than this is recorded as a preview
RAW_SHOWN_CHARS = 2000  # of an invalid decision, in the repair's history entry
HISTORY_INLINE_BYTES = 64 * 1024  # a longer history reaches its decision task through the blob store
DECISION_INPUTS = ("prompt", "history", "tools", "step", "skills", "max_tokens")


class AgentEnd(Struct):
    state: str
    error: TaskError | None = None
    result: bytes | None = None
    failed_task_id: str | None = None


class AgentStep(Struct):
    """What the driver decided for one run: events to record (one message), the run's end if it
    ends, and blobs to store before the events are (the whole of each compacted result)."""

    events: list[Event]
    end: AgentEnd | None = None
    blobs: dict[str, bytes] = {}


class Parsed(Struct):
    kind: str  # "final" | "tool" | "tools" | "invalid"
    shown: bytes
    final: Any = None
    calls: list[tuple[AgentTool, dict[str, Any]]] = []
    message: str = ""
    raw: str = ""  # an invalid decision as it came, clipped (RAW_SHOWN_CHARS)


def failed_for_good(task: TaskRuntime) -> bool:
    """A task that failed and will not be tried again (the controller's own retry rule)."""
    if task.state == "cancelled":
        return True
    return (
        task.state in FAILED
        and task.error is not None
        and next_attempt_delay_ms(task.spec.retry, task.error, task.failures) is None
    )


def drive(run: RunRuntime, agent: AgentState, now: int) -> AgentStep | None:
    """The next step of the run's agent, or None when it waits (for a task, or for nothing)."""
    if agent.final:
        return None
    if agent.step == 0:
        blobs: dict[str, bytes] = {}
        first = decision_spec(agent, 1, agent.history, (), blobs)
        return AgentStep([_append(run, [first], now)], blobs=blobs)
    if agent.decided < agent.step:
        task = run.tasks.get(decide_id(agent.step))
        if task is None:
            return None
        if task.state == "succeeded":
            return _after_decision(run, agent, task, now)
        if failed_for_good(task) and task.error is not None:
            error = msgspec.structs.replace(
                task.error, message=f"the decision task of step {agent.step} failed: {task.error.message}"
            )
            return AgentStep([], end=AgentEnd("failed", error, failed_task_id=task.spec.task_id))
        return None
    if agent.observed < agent.decided and agent.calls:
        tasks = [run.tasks.get(task_id) for _, task_id, _ in agent.calls]
        if any(t is None or not (t.state == "succeeded" or failed_for_good(t)) for t in tasks):
            return None
        return _after_calls(run, agent, now)
    return None


def _append(run: RunRuntime, specs: list[TaskSpec], now: int) -> TaskAppended:
    return TaskAppended(run_id=run.run_id, at_ms=now, tasks=specs)


def decision_spec(
    agent: AgentState, step: int, history: list[bytes], after: tuple[str, ...], blobs: dict[str, bytes]
) -> TaskSpec:
    """The decision task of `step`: the agent's prompt, its history so far, the tool catalog and the
    step number (and its skills and max_tokens, when the function takes them). A history longer
    than HISTORY_INLINE_BYTES travels as a blob (added to `blobs`, stored before the append is
    recorded), so the append's message stays small however long the run."""
    spec = agent.spec
    history_wire = encode_value([msgspec.Raw(entry) for entry in history])
    if len(history_wire) > HISTORY_INLINE_BYTES:
        ref = blob_ref_for("msgpack", history_wire, "list")
        blobs[ref.sha256] = history_wire
        history_wire = wire_blob(ref)
    given: dict[str, bytes] = {
        "prompt": encode_value(spec.prompt),
        "history": history_wire,
        "tools": spec.catalog,
        "step": encode_value(step),
        "skills": encode_value([{"name": s.name, "description": s.description} for s in spec.skills]),
        "max_tokens": encode_value(spec.max_tokens),
    }
    accepts = spec.decide_accepts
    names = [n for n in DECISION_INPUTS if accepts is None or n in accepts]
    return msgspec.structs.replace(
        spec.decide,
        task_id=decide_id(step),
        inputs={name: InputValue(data=given[name]) for name in names},
        after=tuple(sorted(after)),
    )


def tool_spec(tool: AgentTool, task_id: str, args: dict[str, Any], after: str) -> TaskSpec:
    inputs = {name: InputValue(data=wire) for name, wire in tool.defaults.items() if name not in args}
    inputs.update({name: InputValue(data=encode_value(value)) for name, value in args.items()})
    return msgspec.structs.replace(tool.spec, task_id=task_id, inputs=inputs, after=(after,))


def _after_decision(run: RunRuntime, agent: AgentState, task: TaskRuntime, now: int) -> AgentStep:
    spec, step, run_id = agent.spec, agent.step, run.run_id
    parsed = parse_action(task.result or {}, spec)
    events: list[Event] = [
        AgentDecided(
            run_id=run_id,
            step=step,
            at_ms=now,
            task_id=task.spec.task_id,
            kind=parsed.kind,
            action=parsed.shown,
        )
    ]
    if parsed.kind == "final":
        answer = encode_value(parsed.final)
        events.append(AgentFinal(run_id=run_id, step=step, at_ms=now, answer=answer))
        return AgentStep(events, end=AgentEnd("succeeded", result=answer))
    if parsed.kind == "invalid":
        events.append(
            AgentRepair(run_id=run_id, step=step, at_ms=now, message=parsed.message, raw=parsed.raw)
        )
    if step >= spec.max_steps:
        error = TaskError(
            error_type="max_steps_exceeded",
            message=f"the agent made {step} decisions (max_steps={spec.max_steps}) without a final answer",
            origin="controller",
        )
        return AgentStep(events, end=AgentEnd("failed", error))
    if parsed.kind == "invalid":
        history = [*agent.history, repair_entry(step, parsed.message, parsed.raw)]
        blobs: dict[str, bytes] = {}
        nxt = decision_spec(agent, step + 1, history, (task.spec.task_id,), blobs)
        events.append(_append(run, [nxt], now))
        return AgentStep(events, blobs=blobs)
    specs = []
    for index, (tool, args) in enumerate(parsed.calls):
        task_id = call_id(step, index, tool.name)
        full = {**{k: decode_opaque(v) for k, v in tool.defaults.items() if k not in args}, **args}
        events.append(
            AgentToolCall(
                run_id=run_id,
                step=step,
                at_ms=now,
                call=index,
                task_id=task_id,
                tool=tool.name,
                args=encode_value(full),
            )
        )
        specs.append(tool_spec(tool, task_id, args, task.spec.task_id))
    events.append(_append(run, specs, now))
    return AgentStep(events)


def _after_calls(run: RunRuntime, agent: AgentState, now: int) -> AgentStep:
    step, run_id = agent.decided, run.run_id
    observations: list[Observation] = []
    compactions: list[Event] = []
    blobs: dict[str, bytes] = {}
    succeeded: list[str] = []
    for index, task_id, tool in sorted(agent.calls):
        task = run.tasks[task_id]
        args = {name: decode_opaque(given.data) for name, given in _values(task.spec)}
        seen: dict[str, Any]
        if task.state == "succeeded":
            shown, compaction = observe(task.result or {})
            seen = {"result": shown}
            if compaction is not None:
                seen["compacted"] = {
                    "sha256": compaction.sha256,
                    "uri": URI_PREFIX + compaction.sha256,
                    "chars": compaction.chars,
                    "keys": compaction.keys,
                }
                blobs[compaction.sha256] = compaction.blob
                compactions.append(
                    AgentCompacted(
                        run_id=run_id,
                        step=step,
                        at_ms=now,
                        task_id=task_id,
                        chars=compaction.chars,
                        sha256=compaction.sha256,
                        keys=compaction.keys,
                    )
                )
            succeeded.append(task_id)
        else:
            error = task.error
            seen = {
                "error": {
                    "error_type": error.error_type if error is not None else task.state,
                    "message": (error.message if error is not None else f"the tool task ended {task.state}")[
                        :2000
                    ],
                }
            }
        entry = encode_value(
            {
                "step": step,
                "call": index,
                "tool": tool,
                "args": args,
                "action": {"tool": tool, "args": args},  # as a chat model's renderer reads it
                "observation": seen,
            }
        )
        observations.append(
            Observation(call=index, task_id=task_id, tool=tool, ok=task.state == "succeeded", entry=entry)
        )
    history = [*agent.history, *(o.entry for o in observations)]
    after = (decide_id(step), *succeeded)
    events: list[Event] = [
        AgentObserved(run_id=run_id, step=step, at_ms=now, observations=observations),
        *compactions,
        _append(run, [decision_spec(agent, step + 1, history, after, blobs)], now),
    ]
    return AgentStep(events, blobs=blobs)


def _values(spec: TaskSpec) -> list[tuple[str, InputValue]]:
    return sorted((n, g) for n, g in spec.inputs.items() if isinstance(g, InputValue))


# ---- reading a decision --------------------------------------------------------------------------
class _Invalid(Exception):
    pass


def _shown(value: Any) -> bytes:
    try:
        wire = encode_value(value)
    except (TypeError, msgspec.EncodeError):
        wire = encode_value(repr(value))
    if len(wire) <= ACTION_SHOWN_BYTES:
        return wire
    return encode_value(
        {"preview": json.dumps(value, default=repr)[: ACTION_SHOWN_BYTES // 2], "bytes": len(wire)}
    )


def parse_action(result: dict[str, bytes], spec: AgentSpec) -> Parsed:
    """The decision task's `action` output read: a final answer, tool calls bound to their tools'
    signatures, or why it cannot be acted on (`invalid`, with the repair message)."""
    shown = b""
    raw = ""
    try:
        wire = result.get("action")
        if wire is None:
            raise _Invalid(
                f"the decision returned no 'action' (its outputs: {sorted(result)}); return "
                '{"action": {"tool": name, "args": {...}}} or {"action": {"final": answer}}'
            )
        value = decode_opaque(wire)
        if isinstance(value, Ext):
            raise _Invalid("the action is not plain JSON data (a pickled or stored value)")
        shown = _shown(value)
        raw = (value if isinstance(value, str) else json.dumps(value, default=repr))[:RAW_SHOWN_CHARS]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise _Invalid(f"the action is not valid JSON ({exc}): {value[:200]!r}") from None
            if isinstance(value, dict) and set(value) == {"action"}:
                value = value["action"]
        if not isinstance(value, dict):
            raise _Invalid(
                f"the action is a {type(value).__name__}, not an object holding 'tool', 'tools' or 'final'"
            )
        if set(value) == {"malformed"}:  # a decision task that could not read its model's reply
            bad = value["malformed"] if isinstance(value["malformed"], dict) else {}
            raw = str(bad.get("raw", ""))[:RAW_SHOWN_CHARS]
            raise _Invalid(str(bad.get("why") or "the reply could not be read")[:500])
        present = sorted(set(value) & {"final", "tool", "tools"})
        if len(present) != 1:
            raise _Invalid(
                f"the action must hold exactly one of 'final', 'tool' or 'tools' (it holds {sorted(value)})"
            )
        if present == ["final"]:
            return Parsed("final", shown, final=value["final"])
        if present == ["tool"]:
            return Parsed("tool", shown, calls=[_bind(value, spec)])
        calls = value["tools"]
        if not isinstance(calls, list) or not calls:
            raise _Invalid("'tools' must be a non-empty list of {'tool': name, 'args': {...}}")
        if len(calls) > MAX_PARALLEL_CALLS:
            raise _Invalid(f"'tools' asks for {len(calls)} calls; at most {MAX_PARALLEL_CALLS} at once")
        return Parsed("tools", shown, calls=[_bind(call, spec) for call in calls])
    except _Invalid as why:
        return Parsed("invalid", shown, message=str(why), raw=raw)


def _bind(call: Any, spec: AgentSpec) -> tuple[AgentTool, dict[str, Any]]:
    if not isinstance(call, dict) or not isinstance(call.get("tool"), str):
        raise _Invalid(f"a tool call is an object {{'tool': name, 'args': {{...}}}}, not {call!r:.200}")
    name = call["tool"]
    tools = {t.name: t for t in spec.tools}
    tool = tools.get(name)
    if tool is None:
        raise _Invalid(f"unknown tool {name!r}; the tools are {sorted(tools)}")
    args = call.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise _Invalid(f"tool {name!r}: 'args' must be an object of named arguments, not {args!r:.200}")
    missing = sorted(set(tool.required) - set(args) - set(tool.defaults))
    extra = sorted(set(args) - set(tool.accepted)) if tool.accepted is not None else []
    if missing or extra:
        problems = [f"missing argument(s) {missing}"] if missing else []
        problems += [f"unexpected argument(s) {extra}"] if extra else []
        params = list(tool.accepted) if tool.accepted is not None else "any"
        raise _Invalid(f"tool {name!r}: {'; '.join(problems)}; its parameters are {params}")
    return tool, args
