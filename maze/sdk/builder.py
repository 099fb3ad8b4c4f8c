"""The SDK's side of the workflow builder (README "Workflow builder"): MaClient's methods for
workspace task files, saved workflows, and checking and running a builder graph. A graph is the
JSON the Playground's canvas sends: `{"nodes": [{"id", "task", "inputs", "resources",
"timeout_seconds", ...}], "edges": [{"source", "source_handle", "target", "target_handle"}]}`."""

from __future__ import annotations

import re
from typing import Any

from maze.core.errors import ValidationError
from maze.core.paths import check_workspace_name
from maze.sdk.http import Http

_TASK_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,60}\.py")


def _graph_body(graph: dict[str, Any] | None, name: str | None, workspace: str | None) -> dict[str, Any]:
    if (graph is None) == (name is None):
        raise ValidationError("give exactly one of graph= and name= (a saved workflow)")
    body: dict[str, Any] = (
        {"graph": graph} if graph is not None else {"name": check_workspace_name(name or "", "workflow name")}
    )
    if workspace is not None:
        body["workspace"] = check_workspace_name(workspace)
    return body


class BuilderMethods:
    """Workflow builder: mixed into MaClient."""

    http: Http

    def get_builder_catalog(self) -> dict[str, Any]:
        """The builtin blocks: `{builtin_tasks, builtin_workflows, data_types}`, each block with
        its `ref`, inputs, outputs, data types, resources and timeout."""
        found: dict[str, Any] = self.http.get("/playground/catalog")
        return found

    def put_workspace_tasks(self, workspace: str, file: str, source: str) -> dict[str, Any]:
        """Store `source` (Python with `@task` functions) as task file `file` of the workspace; the
        head reads it without running it. Returns `{file, sha256, size, modified_ms, tasks}`;
        ValidationError naming the line and column when it does not parse."""
        if not _TASK_FILE.fullmatch(file):
            raise ValidationError(
                f"task file name {file!r} must be letters, digits, '_', '.' or '-' ending in .py"
            )
        stored: dict[str, Any] = self.http.request(
            "PUT",
            f"/workspaces/{check_workspace_name(workspace)}/tasks/{file}",
            content=source.encode(),
            headers={"content-type": "text/x-python"},
        )
        return stored

    def list_workspace_tasks(self, workspace: str) -> list[dict[str, Any]]:
        """The workspace's task files, each with the tasks it defines."""
        found: list[dict[str, Any]] = self.http.get(f"/workspaces/{check_workspace_name(workspace)}/tasks")
        return found

    def save_workflow(self, name: str, graph: dict[str, Any], description: str = "") -> dict[str, Any]:
        """Save a builder graph under `name` (replacing one of that name)."""
        saved: dict[str, Any] = self.http.request(
            "PUT",
            f"/workflows/{check_workspace_name(name, 'workflow name')}",
            json={"graph": graph, "description": description},
        )
        return saved

    def get_workflow(self, name: str) -> dict[str, Any]:
        """A saved workflow: `{name, description, graph, saved_ms}`."""
        found: dict[str, Any] = self.http.get(f"/workflows/{check_workspace_name(name, 'workflow name')}")
        return found

    def list_workflows(self) -> list[dict[str, Any]]:
        """Every saved workflow: `{name, description, nodes, edges, saved_ms}` each."""
        found: list[dict[str, Any]] = self.http.get("/workflows")
        return found

    def delete_workflow(self, name: str) -> dict[str, Any]:
        """Remove a saved workflow (NotFound when there is none)."""
        gone: dict[str, Any] = self.http.request(
            "DELETE", f"/workflows/{check_workspace_name(name, 'workflow name')}"
        )
        return gone

    def validate_workflow(
        self, graph: dict[str, Any] | None = None, *, name: str | None = None, workspace: str | None = None
    ) -> dict[str, Any]:
        """Check a graph (or a saved one): `{valid, problems}`, each problem with its `code`,
        `message`, `node`, `edge`, `handle`."""
        checked: dict[str, Any] = self.http.post(
            "/workflows/validate", json=_graph_body(graph, name, workspace)
        )
        return checked

    def run_workflow_graph(
        self, graph: dict[str, Any] | None = None, *, name: str | None = None, workspace: str | None = None
    ) -> str:
        """Run a graph (or a saved one) as an ordinary run; returns its run id (follow it with
        `wait_run`, `get_run`). ValidationError (its `details["problems"]`) when it does not
        validate; nothing is recorded then."""
        made: dict[str, Any] = self.http.post("/workflows/run", json=_graph_body(graph, name, workspace))
        self.http.note_seen(int(made["seq"]))
        return str(made["run_id"])

    def get_llm_config(self) -> dict[str, Any]:
        """The head's LLM endpoint for tasks from a prompt: `{configured, model, base_url,
        api_key_env, timeout_s, how_to_configure}` (never the key)."""
        found: dict[str, Any] = self.http.get("/playground/llm")
        return found

    def generate_task(self, prompt: str, file: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
        """`@task` code written by the head's LLM from `prompt`, read (not run, not stored):
        `{file, source, tasks, model, turns, problems}`. Review it, then store it with
        `put_workspace_tasks(ws, result["file"], result["source"])`. Raises LLMNotConfigured (409,
        its message says how to configure one), LLMUnavailable (502) or GenerationFailed (422: the
        model's `text` and the parse `error` in `details`). `timeout`: seconds to wait for the
        head (which asks the model at most twice, each bounded by its `--llm-timeout`)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValidationError("prompt must be a non-empty description of the task")
        body: dict[str, Any] = {"prompt": prompt}
        if file is not None:
            if not _TASK_FILE.fullmatch(file):
                raise ValidationError(
                    f"task file name {file!r} must be letters, digits, '_', '.' or '-' ending in .py"
                )
            body["file"] = file
        made: dict[str, Any] = self.http.post("/playground/tasks/generate", json=body, timeout=timeout)
        return made
