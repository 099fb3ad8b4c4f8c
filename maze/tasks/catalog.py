"""The workflow builder's builtin blocks: the tasks Read File, Write File and Exec Code (the ReAct
agents' tools of maze/tasks/agent_tools.py, runnable as nodes of any graph) and the ReAct
workflow template (a node that becomes a run of kind `react`, maze/api/react.py).

Each is described as a `TaskInfo`, the shape workspace tasks are described in
(maze/core/task_source.py), with its outputs and data types declared here: the canvas needs
handles and types before anything runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from maze.core.task_source import TaskInfo
from maze.sdk.task import task_meta
from maze.tasks import agent_tools

BUILTIN = "builtin:"
REACT_REF = "builtin:react"
REACT_TOOLS = ("read_file", "write_file", "exec_code")
DEFAULT_TASK_TIMEOUT_S = 120.0
DEFAULT_MAX_STEPS = 10

_DECLARED: dict[str, tuple[Callable[..., Any], str, list[str], dict[str, str]]] = {
    "read_file": (
        agent_tools.read_file,
        "Read File",
        ["path", "content", "size", "offset", "truncated", "next_offset"],
        {
            "path": "str",
            "offset": "int",
            "limit": "int",
            "content": "str",
            "size": "int",
            "truncated": "bool",
        },
    ),
    "write_file": (
        agent_tools.write_file,
        "Write File",
        ["path", "bytes"],
        {"path": "str", "content": "str", "bytes": "int"},
    ),
    "exec_code": (
        agent_tools.exec_code,
        "Exec Code",
        ["stdout", "stderr", "exit_code", "timed_out", "files", "binary_files", "files_skipped", "truncated"],
        {
            "code": "str",
            "files": "dict",
            "timeout_seconds": "float",
            "stdout": "str",
            "stderr": "str",
            "exit_code": "int",
            "timed_out": "bool",
            "binary_files": "dict",
            "files_skipped": "dict",
            "truncated": "list",
        },
    ),
}


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    return {
        name: param.default
        for name, param in inspect.signature(fn).parameters.items()
        if param.default is not param.empty
    }


def _builtin_task(name: str) -> TaskInfo:
    fn, title, outputs, data_types = _DECLARED[name]
    meta = task_meta(fn)
    return TaskInfo(
        ref=BUILTIN + name,
        name=title,
        kind="builtin",
        description=(fn.__doc__ or "").strip().split("\n\n")[0],
        call_style=meta.call_style,
        inputs=meta.inputs,
        required_inputs=meta.required_inputs,
        accepted_inputs=meta.accepted_inputs,
        defaults=_defaults(fn),
        outputs=outputs,
        data_types=data_types,
        resources=meta.resources,
        timeout_seconds=meta.timeout_seconds,
        max_retries=meta.max_retries,
        retry_backoff_seconds=meta.retry_backoff_seconds,
        retry_on=meta.retry_on,
    )


BUILTIN_TASKS: dict[str, TaskInfo] = {BUILTIN + name: _builtin_task(name) for name in _DECLARED}

REACT_TEMPLATE = TaskInfo(
    ref=REACT_REF,
    name="ReAct Workflow",
    kind="workflow",
    description="A ReAct agent: an OpenAI-compatible model decides, the tools (Read File, Write File, "
    "Exec Code) act on the run's workspace, until a final answer. It runs as a run of its own (kind "
    "`react`): the only node of its graph. Its timeout is the Task Timeout: it bounds each decision "
    "and tool task and is Exec Code's default; the run's own timeout is derived from it. `api_key_env` "
    "names the environment variable holding the key on the workers.",
    inputs=["prompt", "base_url", "model", "api_key_env", "max_tokens", "max_steps", "tools"],
    required_inputs=["prompt", "base_url", "model"],
    accepted_inputs=["prompt", "base_url", "model", "api_key_env", "max_tokens", "max_steps", "tools"],
    defaults={"max_steps": DEFAULT_MAX_STEPS, "tools": list(REACT_TOOLS), "max_tokens": 1024},
    outputs=["answer"],
    data_types={
        "prompt": "str",
        "base_url": "str",
        "model": "str",
        "api_key_env": "str",
        "max_tokens": "int",
        "max_steps": "int",
        "tools": "list",
    },
    resources={"cpu": 0.1, "cpu_mem": 0, "gpu": 0.0, "gpu_mem": 0},
    timeout_seconds=DEFAULT_TASK_TIMEOUT_S,
)


def builtin_function(ref: str) -> Callable[..., Any]:
    """The function of a builtin task (KeyError for another ref)."""
    return _DECLARED[ref.removeprefix(BUILTIN)][0]
