"""The `@task` decorator, in both of the original Maze's styles.

@task                                   # keyword style: inputs from the signature
def greet(text: str = "") -> dict: ...

@task(inputs=["text"], outputs=["result"])  # params style: one dict argument
def upper(params): ...

@task(["text"], ["result"])             # the same, positionally, as the original Maze allowed
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
from maze.core.globs import MAX_PATTERNS, pattern_problem
from maze.core.resources import normalize_resources
from maze.core.task_source import DATA_TYPES as _DATA_TYPES
from maze.core.task_source import optional_param_reads, returned_keys

F = TypeVar("F", bound=Callable[..., Any])
DATA_TYPES = set(_DATA_TYPES)


class TaskMeta(Struct, frozen=True):
    name: str
    call_style: str
    inputs: list[str]
    required_inputs: list[str]
    accepted_inputs: list[str] | None
    outputs: list[str] | None
    resources: dict[str, Any]  # numbers, and the sandbox flags when set
    data_types: dict[str, str]
    timeout_seconds: float | None = None
    max_retries: int = 0
    retry_backoff_seconds: float = 0.0
    retry_on: list[str] = []
    artifacts: list[str] | None = None  # which files it made are registered (None: all)


def _function_node(fn: Callable[..., Any]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    return next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)), None)


def infer_outputs(fn: Callable[..., Any]) -> list[str] | None:
    """Output keys when every `return` of the function is a dict literal with string keys."""
    func = _function_node(fn)
    return None if func is None else returned_keys(func)


def optional_params(fn: Callable[..., Any], inputs: list[str]) -> set[str]:
    """Of a params-style task's declared `inputs`, those its code reads only as
    `params.get("name")` (never `params["name"]`): a run may leave them out. Every other input is
    required, and so is every input when the source cannot be read."""
    func = _function_node(fn)
    return set() if func is None else optional_param_reads(func, inputs)


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
    sandbox: bool = False,
    network: bool = False,
    artifacts: list[str] | None = None,
) -> TaskMeta:
    resources = dict(resources or {})
    if artifacts is not None:
        if isinstance(artifacts, str):
            raise ValidationError(f"task {fn.__name__!r}: artifacts is a list of patterns, not a string")
        if len(artifacts) > MAX_PATTERNS:
            raise ValidationError(f"task {fn.__name__!r}: artifacts holds {MAX_PATTERNS} patterns at most")
        for i, pattern in enumerate(artifacts):
            problem = pattern_problem(pattern)
            if problem is not None:
                raise ValidationError(f"task {fn.__name__!r}: artifacts[{i}] {problem}")
    for flag, value in (("sandbox", sandbox), ("network", network)):
        if value is not False:
            if flag in resources and resources[flag] != value:
                raise ValidationError(
                    f"task {fn.__name__!r}: {flag} given twice, as {flag}= and in resources"
                )
            resources[flag] = value
    normalized = normalize_resources(resources)
    for key, kind in (data_types or {}).items():
        if kind not in DATA_TYPES:
            raise ValidationError(
                f"task {fn.__name__!r}: data type {kind!r} of {key!r} is not one of {sorted(DATA_TYPES)}"
            )
    accepted: list[str] | None
    if inputs is not None:
        if isinstance(inputs, str) or not all(isinstance(name, str) for name in inputs):
            raise ValidationError(f"task {fn.__name__!r}: inputs must be a list of input names")
        optional = optional_params(fn, list(inputs))
        style, names, accepted = "params", list(inputs), list(inputs)
        required = [name for name in inputs if name not in optional]
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
            # only when set: a task asking for none sends what it always did
            **({"sandbox": True} if normalized.sandbox else {}),
            **({"network": True} if normalized.network else {}),
        },
        data_types=dict(data_types or {}),
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
        retry_backoff_seconds=retry_backoff_seconds,
        retry_on=list(retry_on or []),
        artifacts=list(artifacts) if artifacts is not None else None,
    )


@overload
def task(func: F, /) -> F: ...


@overload
def task(
    func: list[str] | None = None,
    _outputs: list[str] | None = None,
    _resources: dict[str, Any] | None = None,
    _data_types: dict[str, str] | None = None,
    /,
    *,
    inputs: list[str] | None = ...,
    outputs: list[str] | None = ...,
    resources: dict[str, Any] | None = ...,
    data_types: dict[str, str] | None = ...,
    timeout_seconds: float | None = ...,
    max_retries: int = ...,
    retry_backoff_seconds: float = ...,
    retry_on: list[str] | None = ...,
    sandbox: bool = ...,
    network: bool = ...,
    artifacts: list[str] | None = ...,
) -> Callable[[F], F]: ...


def task(
    func: Callable[..., Any] | list[str] | None = None,
    _outputs: list[str] | None = None,
    _resources: dict[str, Any] | None = None,
    _data_types: dict[str, str] | None = None,
    /,
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    resources: dict[str, Any] | None = None,
    data_types: dict[str, str] | None = None,
    timeout_seconds: float | None = None,
    max_retries: int = 0,
    retry_backoff_seconds: float = 0.0,
    retry_on: list[str] | None = None,
    sandbox: bool = False,
    network: bool = False,
    artifacts: list[str] | None = None,
) -> Any:
    """Mark a function as a Maze task.

    Keyword style: `@task` or `@task(resources=...)` on `def f(text: str = "")`; its inputs are
    its parameters, and those without a default are required.

    Params style (the original Maze's): `@task(inputs=["text"], outputs=["result"])`, or
    positionally `@task(["text"], ["result"], resources, data_types)`, on `def f(params)`, which
    gets one dict of the inputs. An input the function reads only as `params.get("text")` may be
    left out of `add_task` (it is then absent from `params`); one it reads as `params["text"]`
    (or that Maze cannot see it read, e.g. without source code) is required, and leaving it out
    is a ValidationError naming it.

    Resources: `cpu` (cores, fractional allowed, default 1), `cpu_mem` (MB, default 0), `gpu`
    (cards, fractional shares a card, default 0, set to 1 when `gpu_mem` > 0), `gpu_mem` (MB per
    card). Reliability: `timeout_seconds`, `max_retries`, `retry_backoff_seconds`, `retry_on`.
    `sandbox=True`: each attempt runs under bubblewrap on a node that can sandbox (README,
    "Sandboxed execution"), without network unless `network=True`. `artifacts=["out/", "*.csv"]`:
    in a run with files, only the files it made that match these patterns (maze/core/globs.py)
    are registered as artifacts (default: every file it created or changed).
    The function must return a dict of outputs. It stays callable as a plain function.
    """
    if isinstance(func, list | tuple):  # @task(["in"], ["out"], resources, data_types)
        for name, given, by_keyword in (
            ("inputs", func, inputs),
            ("outputs", _outputs, outputs),
            ("resources", _resources, resources),
            ("data_types", _data_types, data_types),
        ):
            if given is not None and by_keyword is not None:
                raise ValidationError(f"@task got {name} both positionally and by keyword")
        inputs = list(func)
        outputs = _outputs if _outputs is not None else outputs
        resources = _resources if _resources is not None else resources
        data_types = _data_types if _data_types is not None else data_types
        func = None
    elif any(given is not None for given in (_outputs, _resources, _data_types)):
        raise ValidationError(
            "@task takes its inputs first when given positionally: @task(['text'], ['result'])"
        )

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
            sandbox=sandbox,
            network=network,
            artifacts=artifacts,
        )
        marked = _copy_function(fn) if hasattr(fn, "__maze_task__") else fn
        marked.__maze_task__ = meta  # type: ignore[attr-defined]
        return marked

    if func is not None:
        if not callable(func):
            raise ValidationError(
                "@task takes a list of input names, or keyword arguments, e.g. @task(resources={...})"
            )
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
