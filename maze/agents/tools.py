"""Tool descriptors for LLM decisions: a tool function's name, docstring and parameters as JSON Schema.

`tool_schema(func)` is the one place a tool's schema comes from (the ReAct loop builds the `tools`
input of a decision task with it; `openai_llm_task` sends it as the OpenAI `tools` field and checks
the arguments a model sends back against it). Pure: reads the function's signature, type hints and
docstring, nothing else.
"""

from __future__ import annotations

import builtins
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

_SIMPLE: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
    bytes: {"type": "string"},
    type(None): {"type": "null"},
    list: {"type": "array"},
    tuple: {"type": "array"},
    set: {"type": "array"},
    frozenset: {"type": "array"},
    dict: {"type": "object"},
}
_ARGS_HEADERS = ("args:", "arguments:", "parameters:", "params:")
_SECTION_HEADERS = (*_ARGS_HEADERS, "returns:", "return:", "raises:", "yields:", "examples:", "example:")


def tool_schema(func: Callable[..., Any]) -> dict[str, Any]:
    """A tool's descriptor: `{"name", "description", "parameters"}`, where `parameters` is a JSON
    Schema object (`properties`, `required`, `additionalProperties`).

    Types come from the signature's hints: `int` integer, `float` number, `str` string, `bool`
    boolean, `list[X]`/`tuple`/`set` array (with `items`), `dict[str, X]` object, `X | None` and
    `Optional[X]` anyOf with null, `Literal[...]` and `Enum` an `enum`, `Annotated[X, "text"]` X
    described by the text; anything else (or no hint) constrains nothing. A parameter with a
    default is optional and its default is shown when it is JSON; `**kwargs` allows other
    properties; `*args` is left out. The description is the docstring up to an `Args:` section,
    whose `name: text` (Google style) or `:param name: text` lines describe the parameters. A
    params-style task (`@task(inputs=[...])`, one dict argument) is described by its declared
    inputs and `data_types`."""
    name = str(getattr(func, "__name__", "") or "tool")
    meta = getattr(func, "__maze_task__", None)
    summary, param_docs = _split_docstring(inspect.getdoc(func) or "")
    if meta is not None and getattr(meta, "call_style", "kwargs") == "params":
        props = {
            key: {**_data_type_schema(meta.data_types.get(key)), **_described(param_docs.get(key))}
            for key in meta.inputs
        }
        return {
            "name": meta.name,
            "description": summary,
            "parameters": {
                "type": "object",
                "properties": props,
                "required": list(meta.required_inputs),
                "additionalProperties": False,
            },
        }
    if meta is not None:
        name = meta.name
    hints = _hints(func)
    props = {}
    required: list[str] = []
    extra = False
    for param in inspect.signature(func).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            extra = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        schema = dict(type_schema(hints.get(param.name, param.annotation)))
        if param.name in param_docs and "description" not in schema:
            schema["description"] = param_docs[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif _is_json(param.default):
            schema["default"] = param.default
        props[param.name] = schema
    return {
        "name": name,
        "description": summary,
        "parameters": {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": extra,
        },
    }


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one type hint ({} for one that constrains nothing)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        inner = type_schema(args[0])
        text = next((a for a in args[1:] if isinstance(a, str)), None)
        return {**inner, **_described(text)}
    if origin is typing.Union or origin is types.UnionType:
        options = [type_schema(a) for a in args]
        if any(o == {} for o in options):
            return {}
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is typing.Literal:
        values = [a.value if isinstance(a, enum.Enum) else a for a in args]
        kinds = {_json_type(v) for v in values}
        out: dict[str, Any] = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        return out
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [member.value for member in hint]
        kinds = {_json_type(v) for v in values}
        out = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        return out
    base = origin if origin is not None else hint
    if base in (list, set, frozenset, tuple) or _is_abc(base, "Sequence", "Set", "MutableSequence"):
        out = {"type": "array"}
        items = [a for a in args if a is not Ellipsis]
        if base is tuple and len(items) > 1:
            out["prefixItems"] = [type_schema(a) for a in items]
        elif items and type_schema(items[0]):
            out["items"] = type_schema(items[0])
        return out
    if base is dict or _is_abc(base, "Mapping", "MutableMapping"):
        out = {"type": "object"}
        if len(args) == 2 and type_schema(args[1]):
            out["additionalProperties"] = type_schema(args[1])
        return out
    if isinstance(base, type):
        if base in _SIMPLE:
            return dict(_SIMPLE[base])
        if issubclass(base, bool):
            return {"type": "boolean"}
        if issubclass(base, int):
            return {"type": "integer"}
        if issubclass(base, float):
            return {"type": "number"}
        if issubclass(base, str):
            return {"type": "string"}
        if _is_typeddict(base) or hasattr(base, "__dataclass_fields__") or hasattr(base, "__struct_fields__"):
            return {"type": "object"}
    return {}


def tool_specs(tools: Any) -> list[dict[str, Any]]:
    """The decision task's `tools` input as a list of descriptors `{"name", "description",
    "parameters"}`. Accepted: a list of descriptors (what `tool_schema` returns), of OpenAI tool
    entries (`{"type": "function", "function": {...}}`), of tool functions, or a dict mapping each
    name to a descriptor, to a description string, or to a function. A descriptor without
    `parameters` takes any arguments. A descriptor's `skills` (`[{"name", "description"}]`, what a
    ReAct run's catalog gives `read_skill_file`) are listed in its description: the model sees them
    only there."""
    if tools is None:
        return []
    entries: list[Any]
    if isinstance(tools, Mapping):
        entries = []
        for name, value in tools.items():
            if isinstance(value, Mapping):
                entries.append({"name": name, **value})
            elif isinstance(value, str):
                entries.append({"name": name, "description": value})
            else:
                entries.append(value)
    elif isinstance(tools, list | tuple):
        entries = list(tools)
    else:
        raise TypeError(f"tools must be a list or a dict of tool descriptors, not {type(tools).__name__}")
    out: list[dict[str, Any]] = []
    for entry in entries:
        if callable(entry) and not isinstance(entry, Mapping):
            out.append(tool_schema(entry))
            continue
        if not isinstance(entry, Mapping):
            raise TypeError(f"a tool descriptor is a dict with a name, not {type(entry).__name__}")
        if entry.get("type") == "function" and isinstance(entry.get("function"), Mapping):
            entry = entry["function"]
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"a tool descriptor needs a name: {dict(entry)!r}"[:300])
        params = entry.get("parameters")
        out.append(
            {
                "name": name,
                "description": _with_skills(str(entry.get("description") or ""), entry.get("skills")),
                "parameters": dict(params)
                if isinstance(params, Mapping)
                else {"type": "object", "properties": {}, "additionalProperties": True},
            }
        )
    return out


def _with_skills(description: str, skills: Any) -> str:
    """The description followed by the skills it offers, one `- name: description` line each."""
    if not isinstance(skills, list | tuple) or not skills:
        return description
    lines = [
        f"- {s.get('name')}: {s.get('description') or '(no description)'}"
        for s in skills
        if isinstance(s, Mapping) and s.get("name")
    ]
    if not lines:
        return description
    listing = "The skills (skill_name: what it is for):\n" + "\n".join(lines)
    return f"{description}\n\n{listing}" if description else listing


def args_problem(schema: Mapping[str, Any], args: Mapping[str, Any]) -> str | None:
    """What is wrong with a tool call's arguments against its parameters' schema (None: nothing):
    a required one missing, one the tool does not take, or a top-level type that does not match."""
    props = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in args:
            return f"missing required argument {name!r}"
    if schema.get("additionalProperties") is False:
        unknown = [key for key in args if key not in props]
        if unknown:
            return f"unknown argument {unknown[0]!r} (takes {sorted(props) or 'none'})"
    for key, value in args.items():
        sub = props.get(key)
        if isinstance(sub, Mapping) and not _matches(sub, value):
            return f"argument {key!r} should be {_describe(sub)}, got {_json_type(value)}"
    return None


def _matches(schema: Mapping[str, Any], value: Any) -> bool:
    if "anyOf" in schema:
        return any(_matches(option, value) for option in schema["anyOf"] if isinstance(option, Mapping))
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    if kind is None:
        return True
    actual = _json_type(value)
    if kind == "number":
        return actual in ("number", "integer")
    return bool(actual == kind)


def _describe(schema: Mapping[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_describe(o) for o in schema["anyOf"] if isinstance(o, Mapping))
    if "enum" in schema:
        return f"one of {schema['enum']}"
    return str(schema.get("type", "any value"))


def _json_type(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _data_type_schema(kind: str | None) -> dict[str, Any]:
    return dict(_SIMPLE.get(getattr(builtins, kind, None), {})) if kind else {}


def _described(text: str | None) -> dict[str, Any]:
    return {"description": text} if text else {}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _is_abc(base: Any, *names: str) -> bool:
    import collections.abc as abc

    return any(base is getattr(abc, n) or base is getattr(typing, n, None) for n in names)


def _is_typeddict(base: type) -> bool:
    return isinstance(getattr(base, "__annotations__", None), dict) and hasattr(base, "__total__")


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The function's type hints, resolved; a string annotation that cannot be resolved (a name
    only the user's module knew) is tried alone, and left unconstrained if it still fails."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:
        pass
    out: dict[str, Any] = {}
    namespace = {**vars(builtins), **getattr(func, "__globals__", {})}
    for name, ann in getattr(func, "__annotations__", {}).items():
        if isinstance(ann, str):
            try:
                # as typing.get_type_hints does, one annotation at a time
                ann = eval(ann, namespace)
            except Exception:
                continue
        out[name] = ann
    return out


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {param: text}) from a Google-style (`Args:` then `name (type): text`) or
    Sphinx-style (`:param name: text`) docstring."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        sphinx = re.match(r":param\s+(?:[^:]*\s)?(\w+):\s*(.*)", stripped)
        if sphinx:
            section, current = "sphinx", sphinx.group(1)
            params[current] = sphinx.group(2).strip()
            continue
        if stripped.lower() in _SECTION_HEADERS:
            section = "args" if stripped.lower() in _ARGS_HEADERS else "other"
            current = None
            continue
        if section is None:
            summary.append(line)
        elif section == "args":
            entry = re.match(r"(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", stripped)
            if entry and not line.startswith((" " * 8, "\t\t")):
                current = entry.group(1).lstrip("*")
                params[current] = entry.group(2).strip()
            elif current and stripped:
                params[current] = f"{params[current]} {stripped}".strip()
        elif section == "sphinx" and current and stripped and not stripped.startswith(":"):
            params[current] = f"{params[current]} {stripped}".strip()
    return "\n".join(summary).strip(), params
