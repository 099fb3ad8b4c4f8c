"""The workflow builder's graphs: what a canvas sends (nodes, each a task reference with input
values, resources and a timeout; edges from a node's output handle to another's input handle) and
the pure check of one against the tasks it names, answering every problem at once, each tied to
the node, edge and handle the canvas shows it on. No I/O here: the routes (maze/api/builder.py)
resolve the task references and pass the placer's `never_fits`, the same check POST /runs refuses
a task with (422)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from msgspec import Meta, Struct

from maze.core.dag import find_cycle
from maze.core.errors import ValidationError
from maze.core.resources import normalize_resources
from maze.core.task_source import TaskInfo
from maze.events.specs import Resources
from maze.tasks.catalog import REACT_REF, REACT_TOOLS

MAX_NODES = 500
MAX_EDGES = 2000
NODE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
HANDLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

NodeId = Annotated[str, Meta(pattern=NODE_ID_PATTERN, description="1-128 letters, digits, `_` or `-`.")]
Handle = Annotated[str, Meta(pattern=HANDLE_PATTERN, description="An input's or output's name.")]


class Position(Struct, forbid_unknown_fields=True):
    """Where the canvas drew the node (kept with a saved workflow, not used to run it)."""

    x: float
    y: float


class GraphNode(Struct, forbid_unknown_fields=True):
    """A task on the canvas. `task`: a catalog ref (`builtin:write_file`, `builtin:react`,
    `workspace:<file>:<function>`). `inputs`: literal values (JSON) of inputs not wired.
    `resources`: overrides of the task's own (null: its own). `timeout_seconds`: the task's
    (null: its own); on a ReAct node, its Task Timeout."""

    id: NodeId
    task: Annotated[str, Meta(min_length=1, max_length=400)]
    label: Annotated[str, Meta(max_length=200)] = ""
    inputs: dict[str, Any] = {}
    resources: dict[str, Any] | None = None
    timeout_seconds: Annotated[float, Meta(gt=0, le=366 * 24 * 3600)] | None = None
    position: Position | None = None


class GraphEdge(Struct, forbid_unknown_fields=True):
    """Output `source_handle` of node `source` feeds input `target_handle` of node `target`."""

    source: NodeId
    source_handle: Handle
    target: NodeId
    target_handle: Handle
    id: Annotated[str, Meta(max_length=200)] = ""


class Graph(Struct, forbid_unknown_fields=True):
    nodes: Annotated[list[GraphNode], Meta(max_length=MAX_NODES)]
    edges: Annotated[list[GraphEdge], Meta(max_length=MAX_EDGES)] = []


class GraphProblem(Struct):
    """One problem, where the canvas shows it. `code`: `empty`, `duplicate_node`, `unknown_task`,
    `unknown_node`, `unknown_handle`, `missing_input`, `wired_twice`, `wired_and_set`,
    `type_mismatch`, `bad_resources`, `unplaceable`, `cycle`, `react_not_alone`, `bad_value`.
    `node`: the node it is on; `edge`: the edge's index in `edges` (and `edge_id` its id);
    `handle`: the input or output; `nodes`: a cycle's nodes, in order."""

    code: str
    message: str
    node: str | None = None
    edge: int | None = None
    edge_id: str | None = None
    handle: str | None = None
    nodes: list[str] = []


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def value_fits(value: Any, data_type: str) -> bool:
    kinds = _PYTHON_TYPES.get(data_type)
    if kinds is None:
        return True
    if isinstance(value, bool) and data_type != "bool":
        return False
    return isinstance(value, kinds)


def types_connect(output_type: str | None, input_type: str | None) -> bool:
    """An output may feed an input when either is undeclared, they are the same, or an int feeds
    a float."""
    if output_type is None or input_type is None or output_type == input_type:
        return True
    return output_type == "int" and input_type == "float"


def node_resources(node: GraphNode, info: TaskInfo) -> Resources:
    """The node's resources: its overrides over the task's own (ValidationError when bad)."""
    return normalize_resources({**info.resources, **(node.resources or {})})


def check_graph(
    graph: Graph,
    tasks: Mapping[str, TaskInfo],
    never_fits: Callable[[Resources], str | None],
) -> list[GraphProblem]:
    """Every problem of `graph`, given the tasks its refs resolve to (a ref missing from `tasks`
    is unknown). An empty list: it can run."""
    problems: list[GraphProblem] = []
    if not graph.nodes:
        return [GraphProblem(code="empty", message="the workflow has no nodes")]
    nodes: dict[str, GraphNode] = {}
    for node in graph.nodes:
        if node.id in nodes:
            problems.append(
                GraphProblem(code="duplicate_node", message=f"two nodes have id {node.id!r}", node=node.id)
            )
        nodes[node.id] = node
    infos: dict[str, TaskInfo] = {}
    fits: dict[Resources, str | None] = {}
    for node in graph.nodes:
        info = tasks.get(node.task)
        if info is None:
            problems.append(
                GraphProblem(code="unknown_task", message=f"unknown task {node.task!r}", node=node.id)
            )
            continue
        infos[node.id] = info
        problems += _node_problems(node, info, fits, never_fits)
    if any(n.task == REACT_REF for n in graph.nodes) and (len(graph.nodes) > 1 or graph.edges):
        for node in graph.nodes:
            if node.task == REACT_REF:
                problems.append(
                    GraphProblem(
                        code="react_not_alone",
                        message="a ReAct workflow runs as a run of its own: it must be the only node, without edges",
                        node=node.id,
                    )
                )
    wired: dict[tuple[str, str], int] = {}
    upstream: dict[str, set[str]] = {n.id: set() for n in graph.nodes}
    for index, edge in enumerate(graph.edges):
        problems += _edge_problems(index, edge, nodes, infos, wired)
        if edge.source in nodes and edge.target in nodes:
            upstream[edge.target].add(edge.source)
    for node in graph.nodes:
        info = infos.get(node.id)
        if info is None:
            continue
        for name in info.required_inputs:
            if (node.id, name) not in wired and name not in node.inputs:
                problems.append(
                    GraphProblem(
                        code="missing_input",
                        message=f"input {name!r} of {info.name} is required: wire it or give it a value",
                        node=node.id,
                        handle=name,
                    )
                )
    cycle = find_cycle(upstream)
    if cycle:
        problems.append(
            GraphProblem(code="cycle", message=f"the workflow has a cycle: {' -> '.join(cycle)}", nodes=cycle)
        )
    return problems


def _node_problems(
    node: GraphNode,
    info: TaskInfo,
    fits: dict[Resources, str | None],
    never_fits: Callable[[Resources], str | None],
) -> list[GraphProblem]:
    problems = []
    try:
        resources = node_resources(node, info)
    except ValidationError as exc:
        problems.append(GraphProblem(code="bad_resources", message=exc.message, node=node.id))
    else:
        if resources not in fits:
            fits[resources] = never_fits(resources)
        why = fits[resources]
        if why is not None:
            problems.append(GraphProblem(code="unplaceable", message=why, node=node.id))
    for name, value in node.inputs.items():
        if info.accepted_inputs is not None and name not in info.accepted_inputs:
            problems.append(
                GraphProblem(
                    code="unknown_handle",
                    message=f"{info.name} has no input {name!r}; its inputs are {info.inputs}",
                    node=node.id,
                    handle=name,
                )
            )
            continue
        data_type = info.data_types.get(name)
        if data_type is not None and not value_fits(value, data_type):
            problems.append(
                GraphProblem(
                    code="type_mismatch",
                    message=f"input {name!r} of {info.name} is a {data_type}, not {type(value).__name__}",
                    node=node.id,
                    handle=name,
                )
            )
    if info.ref == REACT_REF:
        tools = node.inputs.get("tools", list(REACT_TOOLS))
        if isinstance(tools, list):
            unknown = [t for t in tools if t not in REACT_TOOLS]
            if unknown or not tools:
                problems.append(
                    GraphProblem(
                        code="bad_value",
                        message=f"tools are one or more of {list(REACT_TOOLS)}, not {tools}",
                        node=node.id,
                        handle="tools",
                    )
                )
    return problems


def _edge_problems(
    index: int,
    edge: GraphEdge,
    nodes: Mapping[str, GraphNode],
    infos: Mapping[str, TaskInfo],
    wired: dict[tuple[str, str], int],
) -> list[GraphProblem]:
    def problem(code: str, message: str, node: str | None, handle: str | None) -> GraphProblem:
        return GraphProblem(
            code=code, message=message, node=node, edge=index, edge_id=edge.id or None, handle=handle
        )

    found = []
    for end in (edge.source, edge.target):
        if end not in nodes:
            found.append(problem("unknown_node", f"the edge joins unknown node {end!r}", None, None))
    if found:
        return found
    if edge.source == edge.target:
        return [problem("cycle", f"node {edge.source!r} feeds itself", edge.source, edge.target_handle)]
    source, target = infos.get(edge.source), infos.get(edge.target)
    out_type = in_type = None
    if source is not None:
        if source.outputs is not None and edge.source_handle not in source.outputs:
            found.append(
                problem(
                    "unknown_handle",
                    f"{source.name} has no output {edge.source_handle!r}; its outputs are {source.outputs}",
                    edge.source,
                    edge.source_handle,
                )
            )
        out_type = source.data_types.get(edge.source_handle)
    if target is not None:
        if target.accepted_inputs is not None and edge.target_handle not in target.accepted_inputs:
            found.append(
                problem(
                    "unknown_handle",
                    f"{target.name} has no input {edge.target_handle!r}; its inputs are {target.inputs}",
                    edge.target,
                    edge.target_handle,
                )
            )
        in_type = target.data_types.get(edge.target_handle)
    if not types_connect(out_type, in_type):
        found.append(
            problem(
                "type_mismatch",
                f"output {edge.source_handle!r} ({out_type}) cannot feed input {edge.target_handle!r} ({in_type})",
                edge.target,
                edge.target_handle,
            )
        )
    key = (edge.target, edge.target_handle)
    if key in wired:
        found.append(
            problem(
                "wired_twice",
                f"input {edge.target_handle!r} of node {edge.target!r} is wired twice (edges {wired[key]} and {index})",
                edge.target,
                edge.target_handle,
            )
        )
    else:
        wired[key] = index
    if edge.target_handle in nodes[edge.target].inputs:
        found.append(
            problem(
                "wired_and_set",
                f"input {edge.target_handle!r} of node {edge.target!r} is wired and also given a value: keep one",
                edge.target,
                edge.target_handle,
            )
        )
    return found
