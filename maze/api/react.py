"""ReAct runs: `POST /runs/react` records a run of kind `react` whose steps the run controller
appends itself (maze/head/agent.py): every decision and tool call a task, in one durable history.
`GET /runs/{id}/trace` reads the agent's trace from the run's log (maze/projections/agent_trace.py).

The decision task and the tools arrive as task templates (code by sha256, resources, retries; no
inputs); each is checked here once, as `POST /runs` checks a task, and recorded in the run's
`run.created` (`AgentSpec`). Their timeouts are bounded by `task_timeout`; the run's own timeout is
derived from it and `max_steps` (`run_timeout_s`).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from msgspec import Meta, Struct

from maze.api.dynamic import _decode
from maze.api.event_reader import run_events
from maze.api.openapi import RunId, answers, documented
from maze.api.run_writer import open_run_created, record_run, require_workspace, store_blobs
from maze.api.runs import MAX_RUN_TIMEOUT_S, MAX_SUBMISSION_BYTES, require_run, salted
from maze.api.state import HeadState
from maze.api.submit import ID_RE, SubmitRun, TaskSubmission, _Literals, accept_submission, check_placeable
from maze.core.clock import new_id
from maze.core.errors import Unavailable, ValidationError
from maze.events.agents import AgentSpec, AgentTool, SkillEntry
from maze.events.codec import encode_value
from maze.events.specs import TaskSpec
from maze.events.store import last_run_seq
from maze.head.agent import DECISION_INPUTS, MAX_PARALLEL_CALLS
from maze.projections.agent_trace import fold_trace

MAX_STEPS = 200
MAX_TOOLS = 64
MAX_TASK_TIMEOUT_S = 24 * 3600.0
SELF_TIMED_GRACE_S = 10.0  # a tool bounded by its own `timeout_seconds` argument gets this much more
STEP_OVERHEAD_S = 10.0
RUN_OVERHEAD_S = 60.0
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def run_timeout_s(max_steps: int, task_timeout: float) -> float:
    """The run-level timeout of a ReAct run: each step is a decision task then its tool tasks (in
    parallel), each bounded by `task_timeout`, plus time to be placed: `max_steps x 2 x
    (task_timeout + 10 s) + 60 s`."""
    return min(MAX_RUN_TIMEOUT_S, max_steps * 2 * (task_timeout + STEP_OVERHEAD_S) + RUN_OVERHEAD_S)


class ToolSubmission(Struct, forbid_unknown_fields=True):
    name: Annotated[
        str, Meta(pattern=TOOL_NAME.pattern[:-2] + "$", description="The name decisions call it by.")
    ]
    task: TaskSubmission  # its task: code, resources, retries; no inputs
    description: Annotated[str, Meta(max_length=4096)] = ""
    parameters: dict[str, Any] = {}  # a JSON schema of its arguments, as decision tasks see it
    defaults: dict[str, Any] = {}  # arguments given when a call leaves them out (plain JSON)


class SkillSubmission(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    description: Annotated[str, Meta(max_length=4096)] = ""


class CreateReactRun(Struct, forbid_unknown_fields=True):
    prompt: Annotated[str, Meta(max_length=256 * 1024, description="What the agent is asked.")]
    decide: TaskSubmission  # the decision task: takes (prompt, history, tools, step)
    tools: Annotated[list[ToolSubmission], Meta(max_length=MAX_TOOLS)]
    max_steps: Annotated[int, Meta(ge=1, le=MAX_STEPS, description="Decisions the agent may make.")] = 10
    task_timeout: Annotated[
        float,
        Meta(
            gt=0,
            le=MAX_TASK_TIMEOUT_S,
            description="Bounds each task (and is exec_code's default timeout); the run's own timeout "
            "is max_steps x 2 x (task_timeout + 10 s) + 60 s.",
        ),
    ] = 120.0
    max_tokens: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    skills: Annotated[list[SkillSubmission], Meta(max_length=MAX_TOOLS)] = []
    functions: dict[str, bytes] = {}
    workspace: Annotated[str, Meta(pattern=r"^([0-9a-f]{64})?$")] = ""
    run_id: Annotated[str, Meta(pattern=r"^(run_[A-Za-z0-9_-]{1,124})?$")] = ""
    workflow_id: Annotated[str, Meta(max_length=128)] = ""


class ReactCreated(Struct):
    """A ReAct run was created (`duplicate`: by an earlier copy of this request)."""

    run_id: str
    workflow_id: str
    seq: int
    max_steps: int
    task_timeout: float
    timeout_seconds: float
    duplicate: bool


def _bounded(spec: TaskSpec, task_timeout: float, self_timed: bool) -> TaskSpec:
    limit = task_timeout + SELF_TIMED_GRACE_S if self_timed else task_timeout
    own = spec.timeout_seconds
    return msgspec.structs.replace(spec, timeout_seconds=limit if own is None else min(own, limit))


def _template(sub: TaskSubmission, task_id: str) -> TaskSubmission:
    """A template checked as a task with no inputs: what it requires is bound at each call."""
    return msgspec.structs.replace(sub, task_id=task_id, inputs={}, required_inputs=[], after=[])


def build_agent(body: CreateReactRun, head: HeadState) -> tuple[AgentSpec, dict[str, bytes], set[str]]:
    """The agent spec to record, and the blobs it needs (to store, and that must exist)."""
    if not math.isfinite(body.task_timeout):
        raise ValidationError("task_timeout must be a finite number of seconds")
    names = [t.name for t in body.tools]
    if len(set(names)) != len(names):
        raise ValidationError(f"tool names must be distinct: {sorted(names)}")
    for tool in body.tools:
        if not TOOL_NAME.fullmatch(tool.name):
            raise ValidationError(f"tool name {tool.name!r} must be an identifier (64 characters at most)")
    unknown = sorted(set(body.decide.required_inputs) - set(DECISION_INPUTS))
    if unknown:
        raise ValidationError(
            f"the decision task requires input(s) {unknown}; it is given only {list(DECISION_INPUTS)}"
        )
    subs = [_template(body.decide, "decide"), *(_template(t.task, f"tool-{t.name}") for t in body.tools)]
    accepted = accept_submission(SubmitRun(tasks=subs, functions=body.functions), head.settings.limits)
    check_placeable(accepted.specs, head.controller.placer.never_fits)
    literals = _Literals(head.settings.limits)
    tools = []
    for tool, spec in zip(body.tools, accepted.specs[1:], strict=True):
        defaults = {
            k: literals.plain(v, f"tool {tool.name!r} default {k!r}") for k, v in tool.defaults.items()
        }
        if literals.to_store:
            raise ValidationError(f"tool {tool.name!r}: its defaults are too large to travel inline")
        tools.append(
            AgentTool(
                name=tool.name,
                spec=_bounded(spec, body.task_timeout, "timeout_seconds" in tool.defaults),
                description=tool.description,
                required=tuple(tool.task.required_inputs),
                accepted=tuple(tool.task.accepted_inputs) if tool.task.accepted_inputs is not None else None,
                defaults=defaults,
            )
        )
    catalog: dict[str, Any] = {
        t.name: {"description": t.description, "parameters": t.parameters or {"type": "object"}}
        for t in body.tools
    }
    if "read_skill_file" in catalog and body.skills:
        catalog["read_skill_file"]["skills"] = [
            {"name": s.name, "description": s.description} for s in body.skills
        ]
    decide = accepted.specs[0]
    agent = AgentSpec(
        prompt=body.prompt,
        decide=_bounded(decide, body.task_timeout, False),
        decide_accepts=tuple(body.decide.accepted_inputs)
        if body.decide.accepted_inputs is not None
        else None,
        tools=tuple(tools),
        max_steps=body.max_steps,
        task_timeout=body.task_timeout,
        catalog=encode_value(catalog),
        max_tokens=body.max_tokens,
        skills=tuple(SkillEntry(s.name, s.description) for s in body.skills),
    )
    return agent, accepted.to_store, accepted.must_exist


@post(
    "/runs/react",
    status_code=201,
    request_max_body_size=MAX_SUBMISSION_BYTES,
    responses=answers(400, 404, 413, 422, 503, ok=ReactCreated, ok_status=201),
    operation_class=documented(
        body=CreateReactRun, body_media_types=("application/json", "application/msgpack")
    ),
)
async def create_react_run(request: Request[Any, Any, Any], head: HeadState) -> Response[ReactCreated]:
    """Create a ReAct run (kind `react`): the run controller appends its decision task, reads each
    answer (`{"action": {"tool": name, "args": {...}}}`, `{"action": {"tools": [...]}}` or
    `{"action": {"final": ...}}`), appends the tool tasks it asks for, then the next decision with the
    observations, until a final answer (the run ends `succeeded` with it) or `max_steps` decisions
    (`failed`, `max_steps_exceeded`). A malformed decision is a repair observation, not a failure.
    Code travels by sha256 (in `functions`, or stored already). 400 for a bad template, 422 for a task
    no node could hold; nothing is recorded then."""
    body_bytes = await request.body()
    body: CreateReactRun = _decode(body_bytes, request.headers.get("content-type", ""), CreateReactRun)
    answer = await record_react_run(head, body, hashlib.sha256(body_bytes).hexdigest()[:32])
    return Response(answer, status_code=201)


async def record_react_run(head: HeadState, body: CreateReactRun, request_hash: str) -> ReactCreated:
    """Check a ReAct run once and record it (POST /runs/react, and the workflow builder's ReAct
    node, maze/api/builder.py). `request_hash`: the request's, for the run's message ids."""
    run_id = body.run_id or new_id("run")
    if not ID_RE.fullmatch(run_id):
        raise ValidationError("run_id, when given, is 'run_' then letters, digits, '_' or '-' (128 at most)")
    if not await head.controller_ready():
        raise Unavailable("the run controller is still replaying history; try again shortly")
    agent, to_store, must_exist = build_agent(body, head)
    await store_blobs(head.blobs, to_store, must_exist)
    if body.workspace:
        await require_workspace(head.blobs, body.workspace)
    timeout = run_timeout_s(body.max_steps, body.task_timeout)
    workflow_id = body.workflow_id or run_id
    created = open_run_created(
        run_id,
        workflow_id,
        "react",
        timeout,
        body.workspace,
        body.max_steps * (1 + MAX_PARALLEL_CALLS),
        agent=agent,
    )
    seq, duplicate = await record_run(head.js, [created], salted(request_hash, head))
    answer = ReactCreated(
        run_id=run_id,
        workflow_id=workflow_id,
        seq=seq,
        max_steps=body.max_steps,
        task_timeout=body.task_timeout,
        timeout_seconds=timeout,
        duplicate=duplicate,
    )
    return answer


@get("/runs/{run_id:str}/trace", responses=answers(400, 404, 503))
async def get_run_trace(run_id: RunId, head: HeadState) -> dict[str, Any]:
    """A ReAct run's agent trace, from its log: each step's decision (its task, what it asked for),
    tool calls, observations (compacted where long, with the whole result's sha256), repairs, the
    final answer, and the run's state and error. A run of another kind has no steps."""
    await require_run(head, run_id)
    until = await last_run_seq(head.js, run_id, reports=True)
    events: list[dict[str, Any]] = []
    async for _, batch, _ in run_events(head.js, run_id, 0, until=until):
        events.extend(batch)
    return fold_trace(run_id, events)
