"""tool_schema / tool_specs / args_problem: pure, no cluster."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal, Optional, Union

import pytest

from maze import task
from maze.agents import tool_schema, tool_specs
from maze.agents.tools import args_problem, type_schema


def multiply(a: int, b: int = 2) -> dict[str, int]:
    """Multiply two integers.

    Args:
        a: the first factor
        b (int): the second factor,
            two by default

    Returns:
        {"result": a * b}
    """
    return {"result": a * b}


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_types_defaults_and_docstring() -> None:
    schema = tool_schema(multiply)
    assert schema == {
        "name": "multiply",
        "description": "Multiply two integers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "the first factor"},
                "b": {"type": "integer", "description": "the second factor, two by default", "default": 2},
            },
            "required": ["a"],
            "additionalProperties": False,
        },
    }


def test_each_kind_of_hint() -> None:
    def tool(
        s: str,
        f: float,
        flag: bool,
        items: list[str],
        table: dict[str, int],
        maybe: Optional[int] = None,  # noqa: UP045 - the old spelling must work too
        either: int | str = 1,
        pair: tuple[int, str] = (1, "a"),
        mode: Literal["fast", "slow"] = "fast",
        color: Color = Color.RED,
        described: Annotated[int, "how many rows"] = 3,
        anything: Any = None,
        bare=5,  # type: ignore[no-untyped-def]
        raw: list = [],  # noqa: B006
        obj: object = None,
    ) -> dict[str, Any]:
        return {}

    props = tool_schema(tool)["parameters"]["properties"]
    assert props["s"] == {"type": "string"}
    assert props["f"] == {"type": "number"}
    assert props["flag"] == {"type": "boolean"}
    assert props["items"] == {"type": "array", "items": {"type": "string"}}
    assert props["table"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["maybe"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["either"] == {"anyOf": [{"type": "integer"}, {"type": "string"}], "default": 1}
    assert props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert props["mode"] == {"enum": ["fast", "slow"], "type": "string", "default": "fast"}
    assert props["color"] == {"enum": ["red", "blue"], "type": "string"}  # an Enum default is not JSON
    assert props["described"] == {"type": "integer", "description": "how many rows", "default": 3}
    assert props["anything"] == {"default": None}
    assert props["bare"] == {"default": 5}
    assert props["raw"] == {"type": "array", "default": []}
    assert props["obj"] == {"default": None}
    assert tool_schema(tool)["parameters"]["required"] == ["s", "f", "flag", "items", "table"]


def test_kwargs_args_and_string_annotations() -> None:
    ns: dict[str, Any] = {}
    exec(  # annotations as strings (from __future__ import annotations in the user's module)
        "from __future__ import annotations\n"
        "def tool(path: str, *rest, limit: int | None = None, **extra) -> dict:\n"
        '    """Read.\n\n    :param path: where to read\n    :param limit: at most this many bytes\n    """\n'
        "    return {}\n",
        ns,
    )
    schema = tool_schema(ns["tool"])
    assert schema["description"] == "Read."
    params = schema["parameters"]
    assert params["properties"] == {
        "path": {"type": "string", "description": "where to read"},
        "limit": {
            "anyOf": [{"type": "integer"}, {"type": "null"}],
            "description": "at most this many bytes",
            "default": None,
        },
    }
    assert params["additionalProperties"] is True
    assert params["required"] == ["path"]


def test_unresolvable_annotation_constrains_nothing() -> None:
    ns: dict[str, Any] = {}
    exec("from __future__ import annotations\ndef tool(a: NotDefinedHere, b: int = 1): return {}\n", ns)
    props = tool_schema(ns["tool"])["parameters"]["properties"]
    assert props == {"a": {}, "b": {"type": "integer", "default": 1}}


def test_maze_tasks_both_styles() -> None:
    @task(resources={"cpu": 1})
    def add(x: float, y: float = 0.0) -> dict[str, float]:
        """Add."""
        return {"sum": x + y}

    @task(inputs=["text", "times"], outputs=["out"], data_types={"text": "str", "times": "int"})
    def repeat(params):  # type: ignore[no-untyped-def]
        """Repeat a text."""
        return {"out": params["text"] * params.get("times", 1)}

    assert tool_schema(add)["parameters"]["properties"]["x"] == {"type": "number"}
    schema = tool_schema(repeat)
    assert schema["name"] == "repeat"
    assert schema["description"] == "Repeat a text."
    assert schema["parameters"] == {
        "type": "object",
        "properties": {"text": {"type": "string"}, "times": {"type": "integer"}},
        "required": ["text"],
        "additionalProperties": False,
    }


def test_type_schema_union_with_any_is_unconstrained() -> None:
    assert type_schema(Union[int, Any]) == {}  # noqa: UP007
    assert type_schema(None) == {"type": "null"}


def test_tool_specs_accepts_each_shape() -> None:
    described = tool_schema(multiply)
    openai = {"type": "function", "function": described}
    assert tool_specs([described]) == [described]
    assert tool_specs([openai]) == [described]
    assert tool_specs([multiply]) == [described]
    assert tool_specs({"multiply": multiply}) == [described]
    assert tool_specs({"multiply": {k: v for k, v in described.items() if k != "name"}}) == [described]
    loose = tool_specs({"search": "Search the web"})
    assert loose == [
        {
            "name": "search",
            "description": "Search the web",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": True},
        }
    ]
    assert tool_specs(None) == []
    with pytest.raises(TypeError, match="needs a name"):
        tool_specs([{"description": "nameless"}])
    with pytest.raises(TypeError, match="list or a dict"):
        tool_specs("multiply")


def test_args_problem() -> None:
    params = tool_schema(multiply)["parameters"]
    assert args_problem(params, {"a": 3}) is None
    assert args_problem(params, {"a": 3, "b": 4}) is None
    assert args_problem(params, {"b": 4}) == "missing required argument 'a'"
    assert args_problem(params, {"a": 1, "c": 2}) == "unknown argument 'c' (takes ['a', 'b'])"
    assert args_problem(params, {"a": "three"}) == "argument 'a' should be integer, got string"
    assert args_problem(params, {"a": True}) == "argument 'a' should be integer, got boolean"

    def tool(x: float, mode: Literal["a", "b"] = "a", n: int | None = None) -> dict[str, Any]:
        return {}

    params = tool_schema(tool)["parameters"]
    assert args_problem(params, {"x": 1}) is None  # an integer is a number
    assert args_problem(params, {"x": 1.5, "n": None}) is None
    assert (
        args_problem(params, {"x": 1.5, "mode": "c"})
        == "argument 'mode' should be one of ['a', 'b'], got string"
    )
    assert args_problem(params, {"x": 1.5, "n": "2"}) == "argument 'n' should be integer or null, got string"


def test_a_key_passed_as_api_key_env_is_refused_without_being_echoed() -> None:
    import pytest as _pytest

    from maze.agents.openai_task import looks_like_a_key, openai_llm_task
    from maze.core.errors import ValidationError

    for key in ("gsk_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "sk-proj-abc123", "abcdef0123456789abcdef01"):
        assert looks_like_a_key(key)
        with _pytest.raises(ValidationError) as info:
            openai_llm_task(base_url="http://127.0.0.1:1", model="m", api_key_env=key)
        assert key not in str(info.value)
    for name in ("OPENAI_API_KEY", "GROQ_API_KEY", "my_llm_key", "KEY2"):
        assert not looks_like_a_key(name)


def test_write_file_makes_no_folder_outside_the_workspace(tmp_path, monkeypatch) -> None:
    import pytest as _pytest

    from maze.core.errors import ValidationError
    from maze.tasks.agent_tools import write_file

    outside = tmp_path / "outside"
    outside.mkdir()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "out").symlink_to(outside)
    monkeypatch.chdir(workspace)
    with _pytest.raises(ValidationError, match="outside"):
        write_file("out/a/b/c.txt", "x")
    assert list(outside.iterdir()) == []
    assert write_file("ok/d/e.txt", "hi") == {"path": "ok/d/e.txt", "bytes": 2}
    assert (workspace / "ok" / "d" / "e.txt").read_text() == "hi"
