"""The `@task` decorator, in both of the original Maze's styles.

@task                                   # keyword style: inputs from the signature
def greet(text: str = "") -> dict: ...

@task(inputs=["text"], outputs=["result"])  # params style: one dict argument
def upper(params): ...
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from collections.abc import Callable
from typing import Any, TypeVar, overload

from msgspec import Struct

from maze.core.errors import ValidationError
from maze.core.resources import normalize_resources

F = TypeVar("F", bound=Callable[..., Any])
DATA_TYPES = {"str", "int", "float", "bool", "list", "dict"}


class TaskMeta(Struct, frozen=True):
    name: str
    call_style: str
    inputs: list[str]
    required_inputs: list[str]
    accepted_inputs: list[str] | None
    outputs: list[str] | None
    resources: dict[str, float]
    data_types: dict[str, str]
    timeout_seconds: float | None = None
    max_retries: int = 0
    retry_backoff_seconds: float = 0.0
    retry_on: list[str] = []


def infer_outputs(fn: Callable[..., Any]) -> list[str] | None:
    """Output keys when every `return` of the function is a dict literal with string keys."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    func = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)), None)
    if func is None:
        return None
    returns: list[ast.Return] = []
    stack: list[ast.AST] = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Return):
            returns.append(node)
        stack.extend(ast.iter_child_nodes(node))
    keys: list[str] = []
    if not returns:
        return None
    for ret in returns:
        if not isinstance(ret.value, ast.Dict):
            return None
        for key in ret.value.keys:
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                return None
            if key.value not in keys:
                keys.append(key.value)
    return keys


def _signature_inputs(fn: Callable[..., Any]) -> tuple[list[str], list[str], list[str] | None]:
    sig = inspect.signature(fn)
    names, required = [], []
    accepted: list[str] | None = []
    for param in sig.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            accepted = None
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            raise ValidationError(
                f"task {fn.__name__!r}: positional-only and *args parameters are not supported"
            )
        names.append(param.name)
        if param.default is param.empty:
            required.append(param.name)
    if accepted is not None:
        accepted = list(names)
    return names, required, accepted


def make_meta(
    fn: Callable[..., Any],
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    resources: dict[str, Any] | None = None,
    data_types: dict[str, str] | None = None,
    timeout_seconds: float | None = None,
    max_retries: int = 0,
    retry_backoff_seconds: float = 0.0,
    retry_on: list[str] | None = None,
) -> TaskMeta:
    normalized = normalize_resources(resources)
    for key, kind in (data_types or {}).items():
        if kind not in DATA_TYPES:
            raise ValidationError(
                f"task {fn.__name__!r}: data type {kind!r} of {key!r} is not one of {sorted(DATA_TYPES)}"
            )
    accepted: list[str] | None
    if inputs is not None:
        style, names, required, accepted = "params", list(inputs), list(inputs), list(inputs)
    else:
        style = "kwargs"
        names, required, accepted = _signature_inputs(fn)
    return TaskMeta(
        name=fn.__name__,
        call_style=style,
        inputs=names,
        required_inputs=required,
        accepted_inputs=accepted,
        outputs=list(outputs) if outputs is not None else infer_outputs(fn),
        resources={
            "cpu": normalized.cpu,
            "cpu_mem": normalized.cpu_mem,
            "gpu": normalized.gpu,
            "gpu_mem": normalized.gpu_mem,
        },
        data_types=dict(data_types or {}),
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
        retry_backoff_seconds=retry_backoff_seconds,
        retry_on=list(retry_on or []),
    )


@overload
def task(func: F, /) -> F: ...


@overload
def task(
    func: None = None,
    *,
    inputs: list[str] | None = ...,
    outputs: list[str] | None = ...,
    resources: dict[str, Any] | None = ...,
    data_types: dict[str, str] | None = ...,
    timeout_seconds: float | None = ...,
    max_retries: int = ...,
    retry_backoff_seconds: float = ...,
    retry_on: list[str] | None = ...,
) -> Callable[[F], F]: ...


def task(
    func: Callable[..., Any] | None = None,
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    resources: dict[str, Any] | None = None,
    data_types: dict[str, str] | None = None,
    timeout_seconds: float | None = None,
    max_retries: int = 0,
    retry_backoff_seconds: float = 0.0,
    retry_on: list[str] | None = None,
) -> Any:
    """Mark a function as a Maze task.

    Resources: `cpu` (cores, fractional allowed, default 1), `cpu_mem` (MB, default 0), `gpu`
    (cards, fractional shares a card, default 0, set to 1 when `gpu_mem` > 0), `gpu_mem` (MB per
    card). Reliability: `timeout_seconds`, `max_retries`, `retry_backoff_seconds`, `retry_on`.
    The function must return a dict of outputs. It stays callable as a plain function.
    """

    def wrap(fn: F) -> F:
        meta = make_meta(
            fn,
            inputs=inputs,
            outputs=outputs,
            resources=resources,
            data_types=data_types,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            retry_backoff_seconds=retry_backoff_seconds,
            retry_on=retry_on,
        )
        marked = _copy_function(fn) if hasattr(fn, "__maze_task__") else fn
        marked.__maze_task__ = meta  # type: ignore[attr-defined]
        return marked

    if func is not None:
        if not callable(func):
            raise ValidationError("@task takes keyword arguments only, e.g. @task(resources={...})")
        return wrap(func)
    return wrap


def _copy_function(fn: F) -> F:
    """`task(...)(already_a_task)` configures a copy, leaving the original task as it was."""
    if not isinstance(fn, types.FunctionType):
        return fn
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    copy.__dict__.update({k: v for k, v in fn.__dict__.items() if k != "__maze_task__"})
    return copy  # type: ignore[return-value]


def task_meta(fn: Callable[..., Any]) -> TaskMeta:
    meta = getattr(fn, "__maze_task__", None)
    return meta if isinstance(meta, TaskMeta) else make_meta(fn)
