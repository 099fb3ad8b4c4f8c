"""Reading `@task` functions from Python source without running it (the workflow builder's
workspace tasks): the head parses what a user wrote with the `ast` module and learns each task's
inputs, outputs, data types, resources and timeout from the decorator's literal arguments and the
function's signature, the way `maze.sdk.task` learns them from the live function. The code itself
only ever runs on a worker (maze/tasks/source.py).

Recognised: `@task`, `@task(...)`, `@maze.task`, `@maze.task(...)` on a function at the top of
the module, with the decorator's arguments in the forms the SDK takes: positionally
`@task(["text"], ["result"], resources, data_types)` or by keyword (`inputs=`, `outputs=`,
`resources=`, `data_types=`, `timeout_seconds=`, `max_retries=`, `retry_backoff_seconds=`,
`retry_on=`, `sandbox=`, `network=`, `artifacts=`). Each argument must be a literal (a constant,
list, dict...): anything else cannot be known without running the code and is refused with its
line and column.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from msgspec import Struct

from maze.core.errors import ValidationError
from maze.core.resources import normalize_resources

DATA_TYPES = ("str", "int", "float", "bool", "list", "dict")
MAX_SOURCE_BYTES = 1024 * 1024
_POSITIONAL = ("inputs", "outputs", "resources", "data_types")
_KEYWORDS = (
    *_POSITIONAL,
    "timeout_seconds",
    "max_retries",
    "retry_backoff_seconds",
    "retry_on",
    "sandbox",
    "network",
    "artifacts",
)


class TaskInfo(Struct, kw_only=True):
    """A task as the builder shows it: what it takes and gives, and what it asks of a node.

    `ref` names it in a graph node (`builtin:write_file`, `workspace:<file>:<function>`).
    `inputs` in order; `required_inputs` those without a default; `accepted_inputs` null when the
    function takes `**kwargs`; `defaults` the literal defaults of the others; `outputs` null when
    they cannot be known before it runs (any handle may then be wired); `data_types` the declared
    type (str, int, float, bool, list, dict) of some inputs and outputs."""

    ref: str
    name: str
    kind: str  # "builtin" | "workspace" | "workflow"
    description: str = ""
    call_style: str = "kwargs"
    inputs: list[str] = []
    required_inputs: list[str] = []
    accepted_inputs: list[str] | None = []
    defaults: dict[str, Any] = {}
    outputs: list[str] | None = None
    data_types: dict[str, str] = {}
    resources: dict[str, Any] = {}
    timeout_seconds: float | None = None
    max_retries: int = 0
    retry_backoff_seconds: float = 0.0
    retry_on: list[str] = []
    file: str | None = None
    line: int | None = None


def returned_keys(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str] | None:
    """Output keys when every `return` of the function is a dict literal with string keys."""
    returns: list[ast.Return] = []
    stack: list[ast.AST] = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Return):
            returns.append(node)
        stack.extend(ast.iter_child_nodes(node))
    if not returns:
        return None
    keys: list[str] = []
    for ret in returns:
        if not isinstance(ret.value, ast.Dict):
            return None
        for key in ret.value.keys:
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                return None
            if key.value not in keys:
                keys.append(key.value)
    return keys


def optional_param_reads(func: ast.FunctionDef | ast.AsyncFunctionDef, inputs: list[str]) -> set[str]:
    """Of a params-style task's declared `inputs`, those its code reads only as
    `params.get("name")` (never `params["name"]`): a run may leave them out."""
    if not func.args.args:
        return set()
    params = func.args.args[0].arg
    got: set[str] = set()
    subscripted: set[str] = set()
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == params
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            got.add(node.args[0].value)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == params
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            subscripted.add(node.slice.value)
    return {name for name in inputs if name in got and name not in subscripted}


def _refused(file: str, node: ast.AST, why: str) -> ValidationError:
    line = getattr(node, "lineno", None)
    column = getattr(node, "col_offset", None)
    column = column + 1 if column is not None else None
    return ValidationError(
        f"{file}, line {line}, column {column}: {why}", file=file, line=line, column=column
    )


def _is_task(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id == "task"
    return (
        isinstance(expr, ast.Attribute)
        and expr.attr == "task"
        and isinstance(expr.value, ast.Name)
        and expr.value.id == "maze"
    )


def _task_decorator(func: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.expr | None:
    for decorator in func.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if _is_task(target):
            return decorator
    return None


def _literal(file: str, node: ast.expr, what: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _refused(
            file,
            node,
            f"{what} must be a literal (a number, string, list or dict) to be read without running the code",
        ) from None


def _options(file: str, decorator: ast.expr) -> dict[str, Any]:
    if not isinstance(decorator, ast.Call):
        return {}
    if len(decorator.args) > len(_POSITIONAL):
        raise _refused(file, decorator, f"@task takes at most {len(_POSITIONAL)} positional arguments")
    options: dict[str, Any] = {}
    for name, arg in zip(_POSITIONAL, decorator.args, strict=False):
        if isinstance(arg, ast.Starred):
            raise _refused(file, arg, "@task(*args) cannot be read without running the code")
        options[name] = _literal(file, arg, f"@task's {name}")
    if options and not isinstance(options.get("inputs"), list | tuple):
        raise _refused(
            file,
            decorator.args[0],
            "@task takes its inputs first when given positionally: @task(['text'], ['result'])",
        )
    for keyword in decorator.keywords:
        if keyword.arg is None:
            raise _refused(file, keyword.value, "@task(**options) cannot be read without running the code")
        if keyword.arg not in _KEYWORDS:
            raise _refused(file, keyword.value, f"@task has no option {keyword.arg!r}")
        if keyword.arg in options:
            raise _refused(file, keyword.value, f"@task got {keyword.arg} both positionally and by keyword")
        options[keyword.arg] = _literal(file, keyword.value, f"@task's {keyword.arg}")
    return options


def _names(file: str, node: ast.AST, value: Any, what: str) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _refused(file, node, f"{what} must be a list of names")
    return list(value)


def _signature(
    file: str, func: ast.FunctionDef | ast.AsyncFunctionDef
) -> tuple[list[str], list[str], list[str] | None, dict[str, Any]]:
    args = func.args
    if args.posonlyargs or args.vararg is not None:
        raise _refused(
            file, func, f"task {func.name!r}: positional-only and *args parameters are not supported"
        )
    names, required = [], []
    defaults: dict[str, Any] = {}
    plain_defaults: list[ast.expr | None] = [None] * (len(args.args) - len(args.defaults)) + list(
        args.defaults
    )
    for arg, default in [
        *zip(args.args, plain_defaults, strict=True),
        *zip(args.kwonlyargs, args.kw_defaults, strict=True),
    ]:
        names.append(arg.arg)
        if default is None:
            required.append(arg.arg)
            continue
        try:
            defaults[arg.arg] = ast.literal_eval(default)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass  # a default that is not a literal: the input is optional, its default unknown here
    accepted = None if args.kwarg is not None else list(names)
    return names, required, accepted, defaults


def _number(file: str, node: ast.AST, value: Any, what: str, whole: bool = False) -> Any:
    kinds = int if whole else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0:
        raise _refused(file, node, f"{what} must be a {'whole ' if whole else ''}number >= 0, got {value!r}")
    return value


def task_info(
    file: str, func: ast.FunctionDef | ast.AsyncFunctionDef, decorator: ast.expr, ref: str
) -> TaskInfo:
    """One decorated function's metadata, checked as `maze.sdk.task.make_meta` checks it."""
    if isinstance(func, ast.AsyncFunctionDef):
        raise _refused(file, func, f"task {func.name!r}: async functions are not supported as tasks")
    options = _options(file, decorator)
    names, required, accepted, defaults = _signature(file, func)
    style = "kwargs"
    if options.get("inputs") is not None:
        declared = _names(file, decorator, options["inputs"], f"task {func.name!r}: inputs")
        optional = optional_param_reads(func, declared)
        style, names, accepted, defaults = "params", declared, list(declared), {}
        required = [name for name in declared if name not in optional]
    outputs = options.get("outputs")
    if outputs is not None:
        outputs = _names(file, decorator, outputs, f"task {func.name!r}: outputs")
    else:
        outputs = returned_keys(func)
    resources = dict(options.get("resources") or {})
    if not isinstance(options.get("resources") or {}, dict):
        raise _refused(file, decorator, f"task {func.name!r}: resources must be a dict")
    for flag in ("sandbox", "network"):
        if options.get(flag):
            resources[flag] = options[flag]
    try:
        normalized = normalize_resources(resources)
    except ValidationError as exc:
        raise _refused(file, decorator, f"task {func.name!r}: {exc.message}") from None
    data_types = options.get("data_types") or {}
    if not isinstance(data_types, dict):
        raise _refused(file, decorator, f"task {func.name!r}: data_types must be a dict")
    for key, kind in data_types.items():
        if kind not in DATA_TYPES:
            raise _refused(
                file,
                decorator,
                f"task {func.name!r}: data type {kind!r} of {key!r} is not one of {list(DATA_TYPES)}",
            )
    timeout = options.get("timeout_seconds")
    if timeout is not None and (_number(file, decorator, timeout, "timeout_seconds") == 0):
        raise _refused(file, decorator, "timeout_seconds must be greater than 0")
    retry_on = options.get("retry_on") or []
    return TaskInfo(
        ref=ref,
        name=func.name,
        kind="workspace",
        description=(ast.get_docstring(func) or "").strip(),
        call_style=style,
        inputs=names,
        required_inputs=required,
        accepted_inputs=accepted,
        defaults=defaults,
        outputs=outputs,
        data_types={str(k): str(v) for k, v in data_types.items()},
        resources={
            "cpu": normalized.cpu,
            "cpu_mem": normalized.cpu_mem,
            "gpu": normalized.gpu,
            "gpu_mem": normalized.gpu_mem,
            **({"sandbox": True} if normalized.sandbox else {}),
            **({"network": True} if normalized.network else {}),
        },
        timeout_seconds=float(timeout) if timeout is not None else None,
        max_retries=_number(file, decorator, options.get("max_retries", 0), "max_retries", whole=True),
        retry_backoff_seconds=float(
            _number(file, decorator, options.get("retry_backoff_seconds", 0.0), "retry_backoff_seconds")
        ),
        retry_on=_names(file, decorator, retry_on, "retry_on"),
        file=file,
        line=func.lineno,
    )


def parse_tasks(source: str, file: str, ref_prefix: str) -> list[TaskInfo]:
    """Every `@task` function at the top of `source`, in order; ValidationError (with `line` and
    `column`) for a syntax error or a decorator that cannot be read. Nothing is executed."""
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise ValidationError(
            f"{file} is larger than {MAX_SOURCE_BYTES} bytes", file=file, limit=MAX_SOURCE_BYTES
        )
    try:
        tree = ast.parse(source, filename=file)
    except SyntaxError as exc:
        where = f", line {exc.lineno}, column {exc.offset}" if exc.lineno is not None else ""
        raise ValidationError(
            f"{file}{where}: syntax error: {exc.msg}",
            file=file,
            line=exc.lineno,
            column=exc.offset,
        ) from None
    except (ValueError, MemoryError, RecursionError) as exc:  # NUL bytes; nesting too deep
        raise ValidationError(f"{file}: cannot be parsed: {exc}", file=file) from None
    found: dict[str, TaskInfo] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        decorator = _task_decorator(node)
        if decorator is None:
            continue
        if node.name in found:
            raise _refused(
                file, node, f"task {node.name!r} is defined twice (first at line {found[node.name].line})"
            )
        found[node.name] = task_info(file, node, decorator, f"{ref_prefix}{node.name}")
    return list(found.values())
