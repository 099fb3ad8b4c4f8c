"""ReAct runs in the controller's pure core: the driver appends each step from the folded state
only (the same log, a restart or a snapshot, the same next step; a step decided in flight is not
decided again), reads actions (final, tools, repairs), bounds max_steps, compacts long results by
its rule, and the trace fold shows each step once."""

from __future__ import annotations

import hashlib
import json

import msgspec

from maze.events.agents import AgentDecided, AgentSpec, AgentTool
from maze.events.codec import decode_value, encode_value
from maze.events.runs import RunCreated, RunFinished, TaskAppended
from maze.events.specs import TaskSpec
from maze.head import snapshot
from maze.head.agent import parse_action
from maze.head.agent_observe import COMPACT_OVER_CHARS, observe
from maze.head.scheduler import Scheduler
from maze.projections.agent_trace import fold_trace
from tests.test_unit_scheduler import decide, items, joined, succeed


def template(name: str) -> TaskSpec:
    return TaskSpec(
        task_id=name,
        name=name,
        func_name=name,
        func_hash="c" * 64,
        call_style="kwargs",
        inputs={},
        outputs=None,
    )


AGENT = AgentSpec(
    prompt="compute",
    decide=template("decide"),
    decide_accepts=("prompt", "history", "tools", "step"),
    tools=(AgentTool(name="multiply", spec=template("multiply"), required=("a", "b"), accepted=("a", "b")),),
    max_steps=3,
    task_timeout=30.0,
    catalog=encode_value({"multiply": {"description": "", "parameters": {}}}),
)


def react_core(agent: AgentSpec = AGENT) -> Scheduler:
    core = Scheduler(queue_factor=1.0, grace_ms=60_000)
    core.apply(joined(cpus=4.0))
    core.apply(
        RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=[], kind="react", max_tasks=27, agent=agent)
    )
    return core


def action(value: object) -> dict[str, bytes]:
    return {"action": encode_value(value)}


def step(core: Scheduler, now: int) -> list[object]:
    """A pass whose events are folded back as the log would (one message)."""
    decision = core.decide(now)
    for event in decision.events:
        core.apply(event)
    return decision.events  # type: ignore[return-value]


def test_a_step_goes_from_decision_to_tool_to_decision_with_the_history() -> None:
    core = react_core()
    first = step(core, 1)
    assert [type(e).__name__ for e in first] == ["TaskAppended"]
    decide1 = items(decide(core, 2))
    assert [i.task_id for i in decide1] == ["s1-decide"]
    succeed(core, decide1[0], action({"tool": "multiply", "args": {"a": 18, "b": 7}}))
    decided = step(core, 3)
    assert [type(e).__name__ for e in decided] == ["AgentDecided", "AgentToolCall", "TaskAppended"]
    tool = items(decide(core, 4))
    assert [i.task_id for i in tool] == ["s1-call0-multiply"]
    succeed(core, tool[0], {"result": encode_value(126)})
    observed = step(core, 5)
    assert [type(e).__name__ for e in observed] == ["AgentObserved", "TaskAppended"]
    nxt = observed[-1]
    assert isinstance(nxt, TaskAppended)
    spec2 = nxt.tasks[0]
    assert spec2.task_id == "s2-decide" and spec2.after == ("s1-call0-multiply", "s1-decide")
    history = decode_value(spec2.inputs["history"].data)  # type: ignore[union-attr]
    assert history == [
        {
            "step": 1,
            "call": 0,
            "tool": "multiply",
            "args": {"a": 18, "b": 7},
            "action": {"tool": "multiply", "args": {"a": 18, "b": 7}},
            "observation": {"result": {"result": 126}},
        }
    ]
    decide2 = items(decide(core, 6))
    succeed(core, decide2[0], action({"final": "126"}))
    ended = step(core, 7)
    assert [type(e).__name__ for e in ended] == ["AgentDecided", "AgentFinal", "RunFinished"]
    assert isinstance(ended[-1], RunFinished) and ended[-1].state == "succeeded"
    assert decode_value(ended[-1].result) == "126"  # type: ignore[arg-type]


def test_a_step_in_flight_is_not_decided_twice_and_a_restart_decides_the_same() -> None:
    core = react_core()
    step(core, 1)
    placed = items(decide(core, 2))
    succeed(core, placed[0], action({"tool": "multiply", "args": {"a": 1, "b": 2}}))
    first = core.decide(3)  # decided, not yet back from the log
    assert any(isinstance(e, AgentDecided) for e in first.events)
    assert not core.decide(4).events  # the overlay holds it: nothing twice
    # a restarted controller (from a snapshot of the same folded state) decides the same step
    restored = snapshot.restore(
        snapshot.decode(snapshot.encode(snapshot.capture(core, {}))), 1.0, 60_000, 5_000
    )
    restored.went_live(3)  # as the controller does once it has caught up
    again = restored.decide(3)
    assert msgspec.msgpack.encode(again.events) == msgspec.msgpack.encode(first.events)
    # the same step stored twice folds once
    for event in [*first.events, *first.events]:
        core.apply(event)
    agent = core.runs["r"].agent
    assert agent is not None and agent.decided == 1 and len(agent.calls) == 1
    assert len(core.runs["r"].tasks) == 2


def test_max_steps_ends_the_run_failed_at_the_last_decision() -> None:
    core = react_core(msgspec.structs.replace(AGENT, max_steps=1))
    step(core, 1)
    placed = items(decide(core, 2))
    succeed(core, placed[0], action({"tool": "multiply", "args": {"a": 1, "b": 2}}))
    ended = step(core, 3)
    assert [type(e).__name__ for e in ended] == ["AgentDecided", "RunFinished"]
    end = ended[-1]
    assert isinstance(end, RunFinished) and end.state == "failed"
    assert end.error is not None and end.error.error_type == "max_steps_exceeded"


def test_actions_are_read_or_repaired() -> None:
    assert parse_action(action({"final": 1}), AGENT).kind == "final"
    assert parse_action(action('{"action": {"final": 2}}'), AGENT).final == 2
    tools = parse_action(action({"tools": [{"tool": "multiply", "args": {"a": 1, "b": 2}}] * 2}), AGENT)
    assert tools.kind == "tools" and len(tools.calls) == 2
    for bad, says in [
        ({}, "no 'action'"),
        (action("{oops"), "not valid JSON"),
        (action(3), "is a int"),
        (action({"final": 1, "tool": "x"}), "exactly one"),
        (action({"tool": "divide"}), "unknown tool 'divide'"),
        (action({"tool": "multiply", "args": {"a": 1}}), "missing argument(s) ['b']"),
        (action({"tool": "multiply", "args": {"a": 1, "b": 2, "c": 3}}), "unexpected argument(s) ['c']"),
        (action({"tool": "multiply", "args": [1, 2]}), "'args' must be an object"),
        (action({"tools": []}), "non-empty list"),
        (action({"malformed": {"raw": "I think", "why": "no JSON in the reply"}}), "no JSON in the reply"),
        (action({"tools": [{"tool": "multiply", "args": {"a": 1, "b": 2}}] * 9}), "at most 8"),
    ]:
        parsed = parse_action(bad, AGENT)  # type: ignore[arg-type]
        assert parsed.kind == "invalid" and says in parsed.message, (bad, parsed.message)


def test_a_repair_shows_the_decision_as_it_came() -> None:
    core = react_core()
    step(core, 1)
    placed = items(decide(core, 2))
    succeed(core, placed[0], action({"malformed": {"raw": "I think 42", "why": "no JSON"}}))
    repaired = step(core, 3)
    assert [type(e).__name__ for e in repaired] == ["AgentDecided", "AgentRepair", "TaskAppended"]
    nxt = repaired[-1]
    assert isinstance(nxt, TaskAppended)
    history = decode_value(nxt.tasks[0].inputs["history"].data)  # type: ignore[union-attr]
    why = "no JSON"
    assert history == [
        {
            "step": 1,
            "action": {"malformed": {"raw": "I think 42", "why": why}},
            "observation": {"repair": why},
        }
    ]
    agent = core.runs["r"].agent
    assert agent is not None and agent.history == [msgspec.msgpack.encode(history[0])]  # the fold agrees


def test_compaction_rule() -> None:
    small = {"text": encode_value("short")}
    assert observe(small) == ({"text": "short"}, None)
    long = {"text": encode_value("a" * 3000 + "b" * 3000), "n": encode_value(7)}
    shown, compaction = observe(long)
    assert compaction is not None and compaction.keys == ["text"] and shown["n"] == 7
    assert shown["text"].startswith("a" * 600) and shown["text"].endswith("b" * 200)
    assert (
        compaction.sha256 == hashlib.sha256(compaction.blob).hexdigest()
        and compaction.sha256 in shown["text"]
    )
    assert json.loads(compaction.blob) == {"n": 7, "text": "a" * 3000 + "b" * 3000}
    many = {f"k{i}": encode_value("x" * 900) for i in range(20)}  # no value long, the whole is
    shown, compaction = observe(many)
    assert compaction is not None and list(shown) == ["compacted"]
    assert len(json.dumps(shown)) < COMPACT_OVER_CHARS


def test_the_trace_shows_each_step_once() -> None:
    events = [
        {
            "type": "run.created",
            "kind": "react",
            "agent": {"prompt": "p", "max_steps": 3, "tools": [{"name": "m"}]},
        },
        {"type": "attempt.started", "task_id": "s1-decide", "attempt": 1, "at_ms": 1},
        {"type": "attempt.succeeded", "task_id": "s1-decide", "attempt": 1, "at_ms": 2},
        {
            "type": "agent.decision",
            "step": 1,
            "task_id": "s1-decide",
            "kind": "tool",
            "action": {},
            "at_ms": 3,
        },
        {
            "type": "agent.tool_call",
            "step": 1,
            "call": 0,
            "task_id": "t",
            "tool": "m",
            "args": {},
            "at_ms": 3,
        },
    ]
    twice = events + events[3:]  # a message stored twice
    trace = fold_trace("r", twice)
    assert len(trace["steps"]) == 1 and len(trace["steps"][0]["tool_calls"]) == 1
    assert trace["steps"][0]["decision_task"]["finished_at_ms"] == 2
    assert trace == fold_trace("r", twice)


def test_the_trace_skips_what_the_history_shows_refused_or_malformed() -> None:
    """A deposed leader's late step (shown refused), a malformed or unknown event: the trace
    leaves them out instead of failing on their missing fields."""
    from maze.projections.agent_trace import fold_trace

    events = [
        {
            "type": "run.created",
            "seq": 1,
            "kind": "react",
            "agent": {"prompt": "p", "max_steps": 3, "tools": []},
        },
        {
            "type": "agent.decision",
            "seq": 2,
            "refused": "a decision of leadership epoch 1, written after epoch 2",
        },
        {"type": "agent.final", "seq": 3, "malformed": "bad"},
        {"type": "agent.somethingnew", "seq": 4, "unknown_type": True},
        {"type": "run.finished", "seq": 5, "refused": "late"},
        {"type": "run.finished", "seq": 6, "state": "succeeded", "at_ms": 6},
    ]
    trace = fold_trace("r", events)
    assert trace["steps"] == [] and trace["final"] is None and trace["state"] == "succeeded"


def test_a_params_style_tool_is_described_and_bound_by_its_inputs() -> None:
    """`@task(inputs=[...])` takes one dict: its catalog entry names the declared inputs (not
    `params`), and a call with exactly those arguments binds (the tool built as POST /runs/react
    builds it, from the template the SDK sends)."""
    from typing import Any

    from maze.agents.tools import args_problem
    from maze.sdk.react import ReactWorkflow
    from maze.sdk.task import task

    @task(inputs=["x", "y"], outputs=["sum"], data_types={"x": "int", "y": "int"})
    def add_old(params: dict[str, Any]) -> dict[str, Any]:
        """Add two numbers (params style)."""
        return {"sum": params["x"] + params["y"]}

    @task
    def decide_fn(prompt: str, history: Any = None, tools: Any = None, step: int = 0) -> dict[str, Any]:
        return {"action": {"final": prompt}}

    body, _ = ReactWorkflow(None, decide_fn, tools=[add_old])._body("p")  # type: ignore[arg-type]
    [entry] = body["tools"]
    assert entry["description"] == "Add two numbers (params style)."
    schema = entry["parameters"]
    assert schema["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer"}}
    assert schema["required"] == ["x", "y"] and schema["additionalProperties"] is False
    assert args_problem(schema, {"x": 1, "y": 2}) is None
    sub = entry["task"]
    tool = AgentTool(
        name="add_old",
        spec=template("add_old"),
        required=tuple(sub["required_inputs"]),
        accepted=tuple(sub["accepted_inputs"]),
    )
    agent = msgspec.structs.replace(AGENT, tools=(tool,))
    parsed = parse_action(action({"tool": "add_old", "args": {"x": 1, "y": 2}}), agent)
    assert parsed.kind == "tool" and parsed.calls[0][1] == {"x": 1, "y": 2}
    wrong = parse_action(action({"tool": "add_old", "args": {"params": {"x": 1}}}), agent)
    assert wrong.kind == "invalid" and "unexpected argument(s) ['params']" in wrong.message


def test_a_stored_value_is_shown_as_a_note_naming_it() -> None:
    """A result value over the inline limit travels as a blob ref: the agent sees a note with its
    size and sha256, not the bare descriptor."""
    from maze.events.values import blob_ref_for, wire_blob

    content = encode_value("z" * 300_000)
    ref = blob_ref_for("msgpack", content, "str")
    shown, compaction = observe({"content": wire_blob(ref), "size": encode_value(300_000)})
    assert compaction is None and shown["size"] == 300_000
    assert shown["content"] == (
        f"…[a value of {len(content)} bytes, too large to show; it is maze://artifacts/sha256/{ref.sha256}]…"
    )


def test_exec_code_as_a_tool_stays_under_the_inline_limit(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The agent's exec_code (called here as a plain function, in a temporary folder) cuts each
    stream to 32 KiB and file contents to 64 KiB in all, naming what it cut or skipped."""
    from maze.tasks.agent_tools import FILES_CAP_BYTES, STREAM_CAP_BYTES, exec_code

    monkeypatch.chdir(tmp_path)
    code = (
        "print('é' * 100_000)\nopen('big.txt', 'w').write('b' * 100_000)\nopen('small.txt', 'w').write('s')\n"
    )
    out = exec_code(code)
    assert out["exit_code"] == 0 and out["truncated"] == ["stdout"]
    assert len(out["stdout"].encode()) <= STREAM_CAP_BYTES and set(out["stdout"]) == {"é"}
    assert out["files"] == {"small.txt": "s"} and out["files_skipped"] == {"big.txt": 100_000}
    assert len(json.dumps(out, ensure_ascii=False).encode()) < STREAM_CAP_BYTES * 2 + FILES_CAP_BYTES
