"""ReAct agent events and the agent spec a ReAct run records, on subject `maze.run.<run_id>`.

A ReAct run (kind `react`, `POST /runs/react`) is a dynamic run whose next task the head's run
controller decides (maze/head/agent.py), not its client: every decision and tool call is a task,
and what the controller made of each decision task's answer is recorded here, in the same message
as the tasks it appends. The controller is a fold of the log, so a restarted head decides the same
next step from the same history and a step is never recorded twice.

Every event here is a controller decision: it carries the deciding controller's leadership epoch,
and a fold refuses one of an older leadership (maze/events/catalog.py, `fenced`). Values are plain
msgpack (never an extension: the head does not unpickle).
"""

from __future__ import annotations

from msgspec import Struct

from maze.events.specs import TaskSpec


class SkillEntry(Struct, frozen=True):
    """A skill as the decision task sees it in the catalog: its name and description only (its
    files travel in the run's workspace under `.skills/<name>/`)."""

    name: str
    description: str


class AgentTool(Struct, frozen=True):
    """A tool the agent may call: its task template (code by sha256, resources, timeout; no
    inputs), and what binds a call's arguments to its signature."""

    name: str
    spec: TaskSpec
    description: str = ""
    required: tuple[str, ...] = ()  # parameters without a default
    accepted: tuple[str, ...] | None = None  # every parameter; None: it takes **kwargs
    # arguments given when a call leaves them out (a wire value each): exec_code's timeout is the
    # run's task_timeout
    defaults: dict[str, bytes] = {}


class AgentSpec(Struct, frozen=True):
    """What a ReAct run was created with (recorded in its `run.created`)."""

    prompt: str
    decide: TaskSpec  # the decision task's template
    decide_accepts: tuple[str, ...] | None  # its parameters (None: **kwargs)
    tools: tuple[AgentTool, ...]
    max_steps: int
    task_timeout: float
    catalog: bytes  # the tools as the decision task sees them (plain msgpack: {name: {...}})
    max_tokens: int | None = None
    skills: tuple[SkillEntry, ...] = ()


class AgentDecided(Struct, frozen=True, tag="agent.decision"):
    """What the decision task of `step` answered, as the controller read it: `kind` is `tool`,
    `tools` (parallel calls), `final`, or `invalid` (a repair follows)."""

    run_id: str
    step: int
    at_ms: int
    task_id: str
    kind: str
    action: bytes = b""  # the action as plain msgpack (clipped when long)
    epoch: int = 0


class AgentToolCall(Struct, frozen=True, tag="agent.tool_call"):
    """A tool call the decision of `step` asked for, appended as task `task_id`."""

    run_id: str
    step: int
    at_ms: int
    call: int  # its index among the step's calls
    task_id: str
    tool: str
    args: bytes  # plain msgpack dict, the defaults filled in
    epoch: int = 0


class AgentRepair(Struct, frozen=True, tag="agent.repair"):
    """The decision of `step` could not be acted on (not JSON, not an object, an unknown tool,
    arguments that do not bind): the agent sees `message` as its observation on the next step."""

    run_id: str
    step: int
    at_ms: int
    message: str
    epoch: int = 0
    raw: str = ""  # the decision as it came (clipped), for a model to see what it said


class Observation(Struct, frozen=True):
    call: int
    task_id: str
    tool: str
    ok: bool
    entry: bytes  # the history entry the agent sees (plain msgpack), compacted where long


class AgentObserved(Struct, frozen=True, tag="agent.observation"):
    """The tool calls of `step` have ended: what the agent sees of them on the next step."""

    run_id: str
    step: int
    at_ms: int
    observations: list[Observation]
    epoch: int = 0


class AgentCompacted(Struct, frozen=True, tag="agent.compaction"):
    """A long tool result shown compacted to the agent; the whole of it (JSON text) is the blob
    `sha256` in the blob store."""

    run_id: str
    step: int
    at_ms: int
    task_id: str
    chars: int
    sha256: str
    keys: list[str] = []  # the result's keys whose values were cut
    epoch: int = 0


class AgentFinal(Struct, frozen=True, tag="agent.final"):
    """The decision of `step` gave the final answer: the run ends `succeeded` with it."""

    run_id: str
    step: int
    at_ms: int
    answer: bytes  # plain msgpack
    epoch: int = 0


AGENT_EVENTS = (AgentDecided, AgentToolCall, AgentRepair, AgentObserved, AgentCompacted, AgentFinal)
