"""The workflow builder's routes: the catalog of blocks, saved workflows, validation and runs of
a canvas's graph (maze/api/graphs.py).

A graph runs as an ordinary run: a static one whose tasks are its nodes (task id = node id),
recorded through POST /runs's own path (`record_submission`), or, for the ReAct template, a run
of kind `react` recorded through POST /runs/react's (`record_react_run`). Either way it is in the
one run history, with the same events as an SDK run, and GET /runs/{id} shows it live. A builder
run always runs with files: the named workspace's (its `.maze/` folder left out), or none, so
that each attempt has its own directory and a file one task writes reaches the tasks after it.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.params import Parameter
from msgspec import Meta, Struct

from maze.api.dynamic import _decode
from maze.api.graphs import Graph, GraphNode, GraphProblem, check_graph, node_resources
from maze.api.openapi import answers, documented, success
from maze.api.react import CreateReactRun, ToolSubmission, record_react_run
from maze.api.runs import record_submission
from maze.api.state import HeadState
from maze.api.submit import SubmitRun, TaskSubmission
from maze.api.views import Submitted
from maze.api.workspace_tasks import run_manifest, split_workspace_ref, task_file_tasks
from maze.core.clock import new_id, now_ms
from maze.core.errors import NotFound, PayloadTooLarge, ResourceUnavailable, ValidationError
from maze.core.paths import WORKSPACE_NAME_PATTERN
from maze.core.task_source import DATA_TYPES, TaskInfo
from maze.events import saved_workflows
from maze.events.artifacts import encode_manifest
from maze.events.values import sha256_hex
from maze.sdk.serialize import pickle_function
from maze.tasks.catalog import (
    BUILTIN_TASKS,
    DEFAULT_MAX_STEPS,
    DEFAULT_TASK_TIMEOUT_S,
    REACT_REF,
    REACT_TEMPLATE,
    REACT_TOOLS,
    builtin_function,
)
from maze.tasks.source import SourceFunction

MAX_SAVED_BYTES = 512 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024
_BUILTINS = {**BUILTIN_TASKS, REACT_REF: REACT_TEMPLATE}

WorkflowName = Annotated[
    str,
    Parameter(
        pattern=WORKSPACE_NAME_PATTERN,
        description="A saved workflow's name: 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit.",
    ),
]
_Name = Annotated[str, Meta(pattern=WORKSPACE_NAME_PATTERN)]


class Catalog(Struct):
    """The builder's sidebar: builtin tasks (Read File, Write File, Exec Code), builtin workflows
    (the ReAct template) and the data types `data_types` uses. A workspace's own tasks:
    GET /workspaces/{name}/tasks."""

    builtin_tasks: list[TaskInfo]
    builtin_workflows: list[TaskInfo]
    data_types: list[str]


class SaveWorkflow(Struct, forbid_unknown_fields=True):
    """`workspace`: the workspace the graph was built in (its `workspace:` task refs point there);
    optional, kept with the graph so loading it can switch to it."""

    graph: Graph
    description: Annotated[str, Meta(max_length=4096)] = ""
    workspace: _Name | None = None


class SavedWorkflow(Struct):
    """`workspace`: the workspace it was saved in, or null (saved without one, or before it was kept)."""

    name: str
    description: str
    graph: Graph
    saved_ms: int
    workspace: str | None = None


class WorkflowSummary(Struct):
    name: str
    description: str
    nodes: int
    edges: int
    saved_ms: int
    workspace: str | None = None


class GraphRequest(Struct, forbid_unknown_fields=True):
    """A graph to check or run: given whole (`graph`) or by a saved workflow's `name` (exactly one
    of them), with the workspace whose tasks (`workspace:` refs) and files it uses."""

    graph: Graph | None = None
    name: _Name | None = None
    workspace: _Name | None = None


class Validation(Struct):
    """`valid`: nothing stops the graph from running; else each problem, where the canvas shows it."""

    valid: bool
    problems: list[GraphProblem]


class GraphRunCreated(Struct):
    """A run was created for the graph: follow it at GET /runs/{run_id} (its tasks' ids are the
    nodes' ids; a ReAct node's run appends its own). `kind`: `static` or `react`."""

    run_id: str
    kind: str
    workflow_id: str
    seq: int
    tasks: int


def _saved_summary(name: str, saved: SavedWorkflow) -> WorkflowSummary:
    return WorkflowSummary(
        name,
        saved.description,
        len(saved.graph.nodes),
        len(saved.graph.edges),
        saved.saved_ms,
        saved.workspace,
    )


def _decode_saved(name: str, value: bytes) -> SavedWorkflow:
    return msgspec.json.decode(value, type=SavedWorkflow)


@get("/playground/catalog", responses=answers())
async def get_catalog() -> Catalog:
    """The builtin blocks of the workflow builder, each with its inputs, outputs, data types,
    default resources and timeout; its `ref` names it in a graph node."""
    return Catalog(
        builtin_tasks=list(BUILTIN_TASKS.values()),
        builtin_workflows=[REACT_TEMPLATE],
        data_types=list(DATA_TYPES),
    )


@get("/workflows", responses=answers(503))
async def list_workflows(head: HeadState) -> list[WorkflowSummary]:
    """Every saved workflow, by name."""
    found = await saved_workflows.list_workflows(head.js)
    return [_saved_summary(name, _decode_saved(name, value)) for name, value in found]


@put(
    "/workflows/{name:str}",
    status_code=201,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 413, 503) | success(200, SavedWorkflow, "Replaced the saved workflow."),
    operation_class=documented(body=SaveWorkflow),
)
async def save_workflow(
    name: WorkflowName, request: Request[Any, Any, Any], head: HeadState
) -> Response[SavedWorkflow]:
    """Save a graph under a name (201 new, 200 replaced), as it is: a graph that does not
    validate yet is saved all the same (a canvas in progress). 512 KiB at most, as JSON."""
    body: SaveWorkflow = _decode(await request.body(), request.headers.get("content-type", ""), SaveWorkflow)
    saved = SavedWorkflow(
        name=name,
        description=body.description,
        graph=body.graph,
        saved_ms=now_ms(),
        workspace=body.workspace,
    )
    value = msgspec.json.encode(saved)
    if len(value) > MAX_SAVED_BYTES:
        raise PayloadTooLarge(
            f"the workflow takes {len(value)} bytes as JSON, above the limit of {MAX_SAVED_BYTES}",
            size=len(value),
            limit=MAX_SAVED_BYTES,
        )
    created = await saved_workflows.put_workflow(head.js, name, value)
    return Response(saved, status_code=201 if created else 200)


@get("/workflows/{name:str}", responses=answers(400, 404, 503))
async def get_workflow(name: WorkflowName, head: HeadState) -> SavedWorkflow:
    """A saved workflow: its graph as saved."""
    value = await saved_workflows.get_workflow(head.js, name)
    assert value is not None
    return _decode_saved(name, value)


@delete("/workflows/{name:str}", status_code=200, responses=answers(400, 404, 409, 503))
async def delete_workflow(name: WorkflowName, head: HeadState) -> WorkflowSummary:
    """Remove a saved workflow (404 when there is none); answers what was removed."""
    return _saved_summary(name, _decode_saved(name, await saved_workflows.delete_workflow(head.js, name)))


async def _graph_of(body: GraphRequest, head: HeadState) -> tuple[Graph, str]:
    """The graph asked for, and its workflow id (the saved name, or none)."""
    if (body.graph is None) == (body.name is None):
        raise ValidationError("give exactly one of `graph` and `name` (a saved workflow)")
    if body.graph is not None:
        return body.graph, ""
    assert body.name is not None
    value = await saved_workflows.get_workflow(head.js, body.name)
    assert value is not None
    return _decode_saved(body.name, value).graph, body.name


async def _resolve(
    graph: Graph, workspace: str | None, head: HeadState
) -> tuple[dict[str, TaskInfo], dict[str, str]]:
    """The tasks the graph's refs name ({ref: info}, unknown ones left out) and the source of
    each workspace task file they use ({file: source})."""
    tasks: dict[str, TaskInfo] = {}
    sources: dict[str, str] = {}
    files: dict[str, list[TaskInfo] | None] = {}
    for node in graph.nodes:
        if node.task in tasks:
            continue
        if node.task in _BUILTINS:
            tasks[node.task] = _BUILTINS[node.task]
            continue
        split = split_workspace_ref(node.task)
        if split is None or workspace is None:
            continue
        file, _ = split
        if file not in files:
            try:
                sources[file], files[file] = await task_file_tasks(head, workspace, file)
            except (NotFound, ValidationError):
                files[file] = None  # its nodes are unknown tasks
        for info in files[file] or []:
            tasks[info.ref] = info
    return tasks, sources


async def _checked(
    body: GraphRequest, head: HeadState
) -> tuple[Graph, str, dict[str, TaskInfo], dict[str, str], list[GraphProblem]]:
    graph, workflow_id = await _graph_of(body, head)
    tasks, sources = await _resolve(graph, body.workspace, head)
    problems = check_graph(graph, tasks, head.controller.placer.never_fits)
    return graph, workflow_id, tasks, sources, problems


@post(
    "/workflows/validate",
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 404, 413, 503),
    operation_class=documented(body=GraphRequest),
)
async def validate_workflow(request: Request[Any, Any, Any], head: HeadState) -> Validation:
    """Check a graph (or a saved one) before running it: every problem at once, each on its node,
    edge and handle: cycles (their nodes), required inputs neither wired nor given, edges between
    incompatible data types, unknown tasks, nodes and handles, resources no registered node can
    hold (the check POST /runs refuses with 422). 404: no saved workflow of that name."""
    body: GraphRequest = _decode(await request.body(), request.headers.get("content-type", ""), GraphRequest)
    *_, problems = await _checked(body, head)
    return Validation(valid=not problems, problems=problems)


def _refusal(problems: list[GraphProblem]) -> Exception:
    details = {"problems": [msgspec.to_builtins(p) for p in problems]}
    first = problems[0]
    where = f" (node {first.node!r})" if first.node else ""
    message = f"the workflow cannot run: {first.message}{where}"
    if len(problems) > 1:
        message += f"; and {len(problems) - 1} more problem(s)"
    if all(p.code == "unplaceable" for p in problems):
        return ResourceUnavailable(message, **details)
    return ValidationError(message, **details)


_builtin_code: dict[str, tuple[str, bytes]] = {}


def _code(node: GraphNode, info: TaskInfo, sources: dict[str, str]) -> tuple[str, bytes]:
    """(sha256, pickle) of the node's function: maze's own for a builtin, a SourceFunction (data
    only: nothing of the user's code runs here) for a workspace task."""
    if info.kind == "builtin":
        if node.task not in _builtin_code:
            _builtin_code[node.task] = pickle_function(builtin_function(node.task))
        return _builtin_code[node.task]
    split = split_workspace_ref(node.task)
    assert split is not None and info.file is not None
    blob = pickle.dumps(SourceFunction(sources[split[0]], info.file, info.name), protocol=5)
    return sha256_hex(blob), blob


def _submission(
    graph: Graph, tasks: dict[str, TaskInfo], sources: dict[str, str]
) -> tuple[list[TaskSubmission], dict[str, bytes]]:
    wires: dict[str, dict[str, dict[str, Any]]] = {n.id: {} for n in graph.nodes}
    for edge in graph.edges:
        wires[edge.target][edge.target_handle] = {"ref": f"{edge.source}.output.{edge.source_handle}"}
    subs, functions = [], {}
    for node in graph.nodes:
        info = tasks[node.task]
        func_hash, blob = _code(node, info, sources)
        functions[func_hash] = blob
        resources = node_resources(node, info)
        subs.append(
            TaskSubmission(
                task_id=node.id,
                func_hash=func_hash,
                name=node.label or info.name,
                func_name=builtin_function(node.task).__name__ if info.kind == "builtin" else info.name,
                call_style=info.call_style,
                inputs={**{k: {"value": v} for k, v in node.inputs.items()}, **wires[node.id]},
                outputs=info.outputs,
                required_inputs=info.required_inputs,
                accepted_inputs=info.accepted_inputs,
                resources=msgspec.to_builtins(resources),
                timeout_seconds=node.timeout_seconds or info.timeout_seconds,
                max_retries=info.max_retries,
                retry_backoff_seconds=info.retry_backoff_seconds,
                retry_on=info.retry_on,
            )
        )
    return subs, functions


async def _workspace_sha(head: HeadState, workspace: str | None) -> str:
    """The run's workspace manifest, stored: the named workspace's files, or none."""
    entries = await run_manifest(head, workspace) if workspace else []
    manifest = encode_manifest(entries)
    sha, _ = await head.blobs.put(manifest)
    return sha


def _react_body(node: GraphNode, workspace: str) -> CreateReactRun:
    from maze.agents.openai_task import openai_llm_task
    from maze.sdk.react import _template, tool_entry

    given = node.inputs
    task_timeout = node.timeout_seconds or DEFAULT_TASK_TIMEOUT_S
    max_tokens = given.get("max_tokens")
    try:
        llm = openai_llm_task(
            given["base_url"],
            given["model"],
            api_key_env=given.get("api_key_env") or None,
            max_tokens=max_tokens if max_tokens is not None else 1024,
            request_timeout=task_timeout,  # the task itself is bounded by the Task Timeout
        )
    except ValidationError as exc:
        raise ValidationError(f"node {node.id!r}: {exc.message}", node=node.id) from None
    decide, decide_hash, decide_blob = _template(llm, "decide")
    functions = {decide_hash: decide_blob}
    tools = []
    for name in given.get("tools") or list(REACT_TOOLS):
        fn = builtin_function(f"builtin:{name}")
        sub, func_hash, blob = _template(fn, f"tool-{name}")
        functions[func_hash] = blob
        description, parameters = tool_entry(fn)
        tools.append(
            ToolSubmission(
                name=name,
                task=msgspec.convert(sub, TaskSubmission),
                description=description,
                parameters=parameters,
            )
        )
    try:
        return msgspec.convert(
            {
                "prompt": given["prompt"],
                "decide": msgspec.convert(decide, TaskSubmission),
                "tools": tools,
                "max_steps": given.get("max_steps", DEFAULT_MAX_STEPS),
                "task_timeout": task_timeout,
                "max_tokens": max_tokens,
                "functions": functions,
                "workspace": workspace,
            },
            CreateReactRun,
        )
    except msgspec.ValidationError as exc:
        raise ValidationError(f"node {node.id!r}: {exc}", node=node.id) from None


@post(
    "/workflows/run",
    status_code=201,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 404, 413, 422, 503, ok=GraphRunCreated, ok_status=201),
    operation_class=documented(body=GraphRequest),
)
async def run_workflow(request: Request[Any, Any, Any], head: HeadState) -> Response[GraphRunCreated]:
    """Run a graph (or a saved one) as an ordinary run, in the one run history: a `static` run
    whose task ids are the node ids, or a `react` run for a ReAct node. A graph with problems is
    refused, nothing recorded: 400 with every problem in `details.problems` (as
    POST /workflows/validate answers them), or 422 when the only ones are resources no node can
    hold."""
    raw = await request.body()
    body: GraphRequest = _decode(raw, request.headers.get("content-type", ""), GraphRequest)
    graph, workflow_id, tasks, sources, problems = await _checked(body, head)
    if problems:
        raise _refusal(problems)
    request_hash = hashlib.sha256(raw).hexdigest()[:32]
    run_id = new_id("run")
    workspace = await _workspace_sha(head, body.workspace)
    if graph.nodes[0].task == REACT_REF:
        react = _react_body(graph.nodes[0], workspace)
        react = msgspec.structs.replace(react, run_id=run_id, workflow_id=workflow_id)
        made = await record_react_run(head, react, request_hash)
        answer = GraphRunCreated(made.run_id, "react", made.workflow_id, made.seq, 0)
        return Response(answer, status_code=201)
    subs, functions = _submission(graph, tasks, sources)
    submission = SubmitRun(
        tasks=subs, functions=functions, workflow_id=workflow_id, run_id=run_id, workspace=workspace
    )
    submitted: Submitted = await record_submission(head, submission, run_id, request_hash)
    answer = GraphRunCreated(
        submitted.run_id, "static", submitted.workflow_id, submitted.seq, submitted.tasks
    )
    return Response(answer, status_code=201)
