"""ReactWorkflow: a ReAct agent whose every decision and tool call is a task of one run
(`MaClient.create_react_workflow`). The loop runs in the head's run controller, not here: `run`
records the run (`POST /runs/react`) and waits for its end, so the agent goes on (and ends) if
this process or the head dies meanwhile."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from maze.agents.tools import tool_schema
from maze.core.errors import RunFailed, ValidationError
from maze.events.artifacts import FileEntry
from maze.events.blob_files import hash_file
from maze.sdk.dynamic import _resending
from maze.sdk.serialize import pickle_function
from maze.sdk.skills import Skill
from maze.sdk.task import task_meta
from maze.sdk.workspace import upload_workspace, workspace_directory

if TYPE_CHECKING:
    from maze.sdk.client import MaClient

MAX_STEPS = 200
DESCRIPTION_CHARS = 4096  # what POST /runs/react takes of a tool's description


def tool_entry(fn: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """A tool's description and the JSON schema of its arguments, as decision tasks see them:
    `maze.agents.tools.tool_schema`'s (params-style tasks by their declared inputs, Optional,
    list[X], Literal, Enum, docstring `Args:`), the description cut at DESCRIPTION_CHARS."""
    schema = tool_schema(fn)
    return str(schema["description"])[:DESCRIPTION_CHARS], schema["parameters"]


def _template(fn: Callable[..., Any], task_id: str) -> tuple[dict[str, Any], str, bytes]:
    meta = task_meta(fn)
    func_hash, blob = pickle_function(fn)
    submission = {
        "task_id": task_id,
        "func_hash": func_hash,
        "name": meta.name,
        "func_name": meta.name,
        "call_style": meta.call_style,
        "inputs": {},
        "outputs": meta.outputs,
        "required_inputs": meta.required_inputs,
        "accepted_inputs": meta.accepted_inputs,
        "resources": meta.resources,
        "timeout_seconds": meta.timeout_seconds,
        "max_retries": meta.max_retries,
        "retry_backoff_seconds": meta.retry_backoff_seconds,
        "retry_on": meta.retry_on,
        **({"artifacts": meta.artifacts} if meta.artifacts is not None else {}),
    }
    return submission, func_hash, blob


class ReactWorkflow:
    """A ReAct agent: `run(prompt)` returns its final answer, `run_async(prompt)` its run's id (a
    run of kind `react`). Each step is a decision task (`llm_task(prompt, history, tools, step)`,
    returning `{"action": {"tool": name, "args": {...}}}`, `{"action": {"tools": [...]}}` or
    `{"action": {"final": answer}}`) and the tool tasks it asks for."""

    def __init__(
        self,
        client: MaClient,
        llm_task: Callable[..., Any],
        tools: Sequence[Callable[..., Any]],
        max_steps: int = 10,
        skills: Sequence[Skill] | None = None,
        task_timeout: float = 120.0,
        max_tokens: int | None = None,
        workspace_dir: str | None = None,
    ) -> None:
        from maze.tasks.agent_tools import exec_code, read_skill_file

        self.client = client
        if not callable(llm_task):
            raise ValidationError("llm_task must be a function decorated with @task")
        task_meta(llm_task)  # ValidationError unless decorated
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_STEPS:
            raise ValidationError(f"max_steps must be an integer in 1..{MAX_STEPS}, got {max_steps!r}")
        if (
            isinstance(task_timeout, bool)
            or not isinstance(task_timeout, int | float)
            or not task_timeout > 0
        ):
            raise ValidationError(f"task_timeout must be a positive number of seconds, got {task_timeout!r}")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise ValidationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        self.skills = list(skills or [])
        for skill in self.skills:
            if not isinstance(skill, Skill):
                raise ValidationError(f"skills are made by load_skill(path), not {type(skill).__name__}")
        if len({s.name for s in self.skills}) != len(self.skills):
            raise ValidationError(f"skill names must be distinct: {[s.name for s in self.skills]}")
        self.tools = list(tools)
        if self.skills and read_skill_file not in self.tools:
            self.tools.append(read_skill_file)
        names = [task_meta(t).name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValidationError(f"tool names must be distinct: {names}")
        if max_tokens is not None and getattr(llm_task, "__maze_llm_config__", None) is not None:
            # an openai_llm_task (maze/agents): its own max_tokens setting is what it sends
            with_settings = importlib.import_module("maze.agents.openai_task").with_settings
            llm_task = with_settings(llm_task, max_tokens=max_tokens)
        self.llm_task = llm_task
        self.max_steps = max_steps
        self.task_timeout = float(task_timeout)
        self.max_tokens = max_tokens
        self.workspace_dir = workspace_directory(workspace_dir)
        self._exec_code = exec_code

    def _body(self, prompt: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        functions: dict[str, bytes] = {}
        decide, func_hash, blob = _template(self.llm_task, "decide")
        functions[func_hash] = blob
        tools = []
        for fn in self.tools:
            sub, func_hash, blob = _template(fn, f"tool-{task_meta(fn).name}")
            functions[func_hash] = blob
            defaults = {"timeout_seconds": self.task_timeout} if fn is self._exec_code else {}
            description, parameters = tool_entry(fn)
            tools.append(
                {
                    "name": task_meta(fn).name,
                    "task": sub,
                    "description": description,
                    "parameters": parameters,
                    "defaults": defaults,
                }
            )
        body = {
            "prompt": prompt,
            "decide": decide,
            "tools": tools,
            "max_steps": self.max_steps,
            "task_timeout": self.task_timeout,
            "max_tokens": self.max_tokens,
            "skills": [{"name": s.name, "description": s.description} for s in self.skills],
            "run_id": f"run_{uuid.uuid4().hex}",
        }
        return body, functions

    def _workspace(self) -> str:
        extra: list[tuple[FileEntry, Path]] = []
        for skill in self.skills:
            for rel in skill.files:
                local = skill.path / rel
                sha, size = hash_file(local)
                extra.append((FileEntry(f".skills/{skill.name}/{rel}", sha, size), local))
        return upload_workspace(self.client.blobs, self.workspace_dir, extra=extra)

    def run_async(self, prompt: str) -> str:
        """Start the agent on `prompt` and return its run's id at once (follow it with
        `client.get_agent_trace(run_id)`, `client.wait_run(run_id)`)."""
        if not isinstance(prompt, str):
            raise ValidationError(f"prompt must be a string, got {type(prompt).__name__}")
        body, functions = self._body(prompt)
        blobs = self.client.blobs
        inline, upload = blobs.split_code(functions)
        blobs.upload(upload)
        body["functions"] = inline
        body["workspace"] = self._workspace()
        data = msgspec.msgpack.encode(body)
        http = self.client.http
        created: dict[str, Any] = _resending(
            lambda: http.post("/runs/react", content=data, headers={"content-type": "application/msgpack"})
        )
        blobs.known.update(inline)
        http.note_seen(int(created["seq"]))
        return str(created["run_id"])

    def run(self, prompt: str, timeout: float | None = None) -> Any:
        """Run the agent on `prompt` and return its final answer. Raises RunFailed (its `error`:
        `max_steps_exceeded`, a failed decision task, `cancelled`, `timeout` ...) when it ends
        without one; WaitTimeout after `timeout` seconds (the run goes on)."""
        run_id = self.run_async(prompt)
        final = self.client.wait_run(run_id, timeout)
        trace = self.client.get_agent_trace(run_id)
        if final["state"] != "succeeded":
            error = final.get("error") or trace.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise RunFailed(
                f"ReAct run {run_id} ended {final['state']}: {message}",
                run_id=run_id,
                state=final["state"],
                error=error,
                steps=len(trace["steps"]),
            )
        return trace["final"]
