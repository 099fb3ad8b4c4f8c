"""Pure parts of the workflow builder: reading `@task` source without running it
(maze/core/task_source.py), the graph check (maze/api/graphs.py) and a SourceFunction's
round trip through pickle (maze/tasks/source.py)."""

from __future__ import annotations

import linecache
import pickle
import traceback

import pytest

from maze.api.graphs import Graph, GraphEdge, GraphNode, check_graph, types_connect, value_fits
from maze.core.errors import ValidationError
from maze.core.task_source import TaskInfo, parse_tasks
from maze.events.specs import Resources
from maze.sdk.task import task_meta
from maze.tasks.catalog import BUILTIN_TASKS
from maze.tasks.source import SourceFunction

SOURCE = """import maze
from maze import task

@task(["text"], ["result"], {"cpu": 0.5}, {"text": "str"})
def positional(params):
    return {"result": params.get("text", "")}

@maze.task(timeout_seconds=5, max_retries=2, retry_on=["user_code"], sandbox=True)
def keyword(a, *, b=3, **rest):
    if a:
        return {"x": 1}
    return {"y": 2}

def helper():
    return 1

@task
def undeclared(a):
    return compute(a)
"""


def test_both_decorator_forms_are_read_as_the_sdk_reads_them() -> None:
    tasks = {t.name: t for t in parse_tasks(SOURCE, "t.py", "workspace:t.py:")}
    assert list(tasks) == ["positional", "keyword", "undeclared"]
    positional = tasks["positional"]
    assert positional.call_style == "params"
    assert positional.required_inputs == []  # read only with params.get
    assert positional.outputs == ["result"]
    assert positional.resources["cpu"] == 0.5
    assert positional.data_types == {"text": "str"}
    keyword = tasks["keyword"]
    assert keyword.inputs == ["a", "b"] and keyword.required_inputs == ["a"]
    assert keyword.accepted_inputs is None  # **rest
    assert keyword.defaults == {"b": 3}
    assert sorted(keyword.outputs or []) == ["x", "y"]
    assert keyword.timeout_seconds == 5.0 and keyword.max_retries == 2
    assert keyword.retry_on == ["user_code"] and keyword.resources["sandbox"] is True
    assert tasks["undeclared"].outputs is None


def test_the_parse_agrees_with_the_sdks_decorator() -> None:
    """The same source, run here (the test may): the SDK's metadata equals what the head reads."""
    namespace: dict[str, object] = {}
    linecache.cache["t.py"] = (len(SOURCE), None, SOURCE.splitlines(keepends=True), "t.py")  # its source
    exec(compile(SOURCE, "t.py", "exec"), namespace)
    for info in parse_tasks(SOURCE, "t.py", ""):
        meta = task_meta(namespace[info.name])  # type: ignore[arg-type]
        assert (info.inputs, info.required_inputs, info.accepted_inputs) == (
            meta.inputs,
            meta.required_inputs,
            meta.accepted_inputs,
        )
        assert info.call_style == meta.call_style
        assert info.resources == meta.resources
        assert info.timeout_seconds == meta.timeout_seconds
        assert info.outputs == meta.outputs


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("@task\nasync def f():\n    return {}\n", 2, "async"),
        ("@task(bogus=1)\ndef f():\n    return {}\n", 1, "no option 'bogus'"),
        ("@task(['a'], inputs=['b'])\ndef f(p):\n    return {}\n", 1, "both positionally and by keyword"),
        ("@task\ndef f():\n    return {}\n\n@task\ndef f():\n    return {}\n", 6, "defined twice"),
        ("@task(**opts)\ndef f():\n    return {}\n", 1, "**options"),
        ("@task(timeout_seconds=0)\ndef f():\n    return {}\n", 1, "greater than 0"),
        ("x = '\0'\n", None, "null bytes"),
    ],
)
def test_what_cannot_be_read_is_refused_with_where(source: str, line: int | None, words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_tasks(source, "t.py", "")
    assert words in raised.value.message
    if line is not None:
        assert raised.value.details["line"] == line


def test_a_source_function_survives_pickle_and_names_its_file() -> None:
    source = "def f(x):\n    y = x + 1\n    raise ValueError(y)\n"
    fn = pickle.loads(pickle.dumps(SourceFunction(source, "mine.py", "f")))
    with pytest.raises(ValueError) as raised:
        fn(x=1)
    text = "".join(traceback.format_exception(raised.value))
    assert 'File "mine.py", line 3, in f' in text and "raise ValueError(y)" in text
    assert pickle.dumps(SourceFunction(source, "mine.py", "f")) == pickle.dumps(fn)  # stable hash
    with pytest.raises(LookupError, match="no function 'g'"):
        SourceFunction(source, "mine.py", "g")()


def test_data_types_connect_and_values_fit() -> None:
    assert types_connect("int", "float") and types_connect(None, "str") and types_connect("str", None)
    assert not types_connect("float", "int") and not types_connect("str", "int")
    assert value_fits(1, "float") and not value_fits(True, "int") and value_fits(True, "bool")
    assert not value_fits("1", "int") and value_fits({"a": 1}, "dict") and value_fits(object(), "tensor")


def _info(name: str, inputs: list[str], outputs: list[str] | None, **more: object) -> TaskInfo:
    return TaskInfo(
        ref=name,
        name=name,
        kind="workspace",
        inputs=inputs,
        required_inputs=inputs,
        accepted_inputs=inputs,
        outputs=outputs,
        **more,
    )  # type: ignore[arg-type]


def test_a_long_cycle_names_every_node_and_placement_is_asked_once_per_shape() -> None:
    tasks = {"t": _info("t", ["a"], ["b"])}
    nodes = [GraphNode(id=f"n{i}", task="t") for i in range(4)]
    edges = [
        GraphEdge(source=f"n{i}", source_handle="b", target=f"n{(i + 1) % 4}", target_handle="a")
        for i in range(4)
    ]
    asked: list[Resources] = []

    def never_fits(req: Resources) -> str | None:
        asked.append(req)
        return None

    problems = check_graph(Graph(nodes=nodes, edges=edges), tasks, never_fits)
    assert [p.code for p in problems] == ["cycle"]
    assert set(problems[0].nodes) == {"n0", "n1", "n2", "n3"}
    assert len(asked) == 1


def test_builtin_tasks_declare_what_their_functions_return() -> None:
    from maze.tasks.catalog import builtin_function

    for ref, info in BUILTIN_TASKS.items():
        meta = task_meta(builtin_function(ref))
        assert info.inputs == meta.inputs and info.required_inputs == meta.required_inputs
        assert set(info.data_types) <= set(info.inputs) | set(info.outputs or [])
