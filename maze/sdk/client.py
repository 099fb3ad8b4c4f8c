"""MaClient: the entry point of the SDK."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from maze.core.errors import NotFound, RunFailed, Unavailable, Unreachable, ValidationError
from maze.sdk import history
from maze.sdk.app_spec import App
from maze.sdk.artifacts import download_blob, find_artifact, list_artifacts
from maze.sdk.blobs import BlobClient
from maze.sdk.builder import BuilderMethods
from maze.sdk.dynamic import DynamicRun, _resending
from maze.sdk.history import RunPage, When
from maze.sdk.http import Http
from maze.sdk.logs import follow_logs, get_logs
from maze.sdk.react import ReactWorkflow
from maze.sdk.skills import Skill
from maze.sdk.stream import follow_events
from maze.sdk.workflow import MaWorkflow
from maze.sdk.workspace import upload_workspace, workspace_directory
from maze.sdk.workspaces import WorkspaceMethods

TASKS_PAGE = 10_000
RETRY_POSTS = 4  # a retry request sent again after an unavailable head (it is idempotent)
RUN_ID_CANDIDATES = 10  # an ambiguous beginning of a run id names this many runs it could be


class MaClient(WorkspaceMethods, BuilderMethods):
    """Connects to a Maze head (`maze start --head`) at `server_url`."""

    def __init__(self, server_url: str = "http://localhost:8000", token: str | None = None) -> None:
        """`server_url`: `http(s)://HOST:PORT`, or `HOST:PORT` (http). `token`: the head's API
        token (else $MAZE_TOKEN, else, for a head on this machine, the one in the local data dir).
        A head that binds only loopback needs none.

        A URL where nothing answers fails at once with `Unreachable` (until a head has answered
        there once: then a refused connection is a head restarting, and calls wait for it); a
        server there that is not a Maze head fails with `NotAMazeHead`."""
        self.http = Http(server_url, token=token)
        self.server_url = self.http.server_url
        self.blobs = BlobClient(self.http)

    def close(self) -> None:
        """Close the HTTP connections (also done when the client is garbage-collected)."""
        self.http.close()

    def __enter__(self) -> MaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_workflow(self) -> MaWorkflow:
        """A new, empty static workflow."""
        return MaWorkflow(f"wf_{uuid.uuid4().hex}", self.server_url, client=self)

    def create_dynamic_run(
        self,
        max_tasks: int = 100,
        timeout_seconds: float | None = None,
        workspace_dir: str | None = None,
    ) -> DynamicRun:
        """A new dynamic run: append tasks to it while it runs (`append_task`), wait for them
        (`wait_for_task`), then `finalize(result)` it. It never ends by itself when its tasks are
        done: without `finalize` or `cancel` it ends `timed_out` after `timeout_seconds` (None:
        no timeout, it stays open until finalized or cancelled, so give one when you can).
        `max_tasks` (1..100,000) bounds the tasks it may ever hold. `workspace_dir`: files its
        tasks run with, as for `MaWorkflow.run`."""
        if not isinstance(max_tasks, int) or isinstance(max_tasks, bool) or not 1 <= max_tasks <= 100_000:
            raise ValidationError(f"max_tasks must be an integer in 1..100000, got {max_tasks!r}")
        body: dict[str, Any] = {"max_tasks": max_tasks, "run_id": f"run_{uuid.uuid4().hex}"}
        if timeout_seconds is not None:
            body["timeout_seconds"] = float(timeout_seconds)
        if workspace_dir is not None:
            directory = workspace_directory(workspace_dir)
            assert directory is not None
            body["workspace"] = upload_workspace(self.blobs, directory)
        created: dict[str, Any] = _resending(lambda: self.http.post("/runs/dynamic", json=body))
        self.http.note_seen(int(created["seq"]))
        return DynamicRun(self, created)

    def create_react_workflow(
        self,
        llm_task: Any,
        tools: Iterable[Any] = (),
        max_steps: int = 10,
        skills: Iterable[Skill] | None = None,
        task_timeout: float = 120.0,
        max_tokens: int | None = None,
        workspace_dir: str | None = None,
    ) -> ReactWorkflow:
        """A ReAct agent whose decisions and tool calls are tasks of one run (kind `react`), driven
        by the head's run controller: `llm_task(prompt, history, tools, step)` (a @task) returns
        `{"action": {"tool": name, "args": {...}}}`, `{"action": {"tools": [...]}}` (parallel
        calls) or `{"action": {"final": answer}}`; `tools` are @task functions (and the built-in
        `read_file`, `write_file`, `exec_code`). `max_steps` bounds its decisions; `task_timeout`
        bounds each task and is exec_code's default timeout (the run's own timeout derives from
        both); `max_tokens` is given to a decision task that takes it; `skills` (load_skill) add
        the `read_skill_file` tool. `.run(prompt)` returns the final answer, `.run_async(prompt)`
        the run id."""
        return ReactWorkflow(
            self,
            llm_task,
            list(tools),
            max_steps=max_steps,
            skills=list(skills or []),
            task_timeout=task_timeout,
            max_tokens=max_tokens,
            workspace_dir=workspace_dir,
        )

    def get_agent_trace(self, run_id: str) -> dict[str, Any]:
        """A ReAct run's trace (`GET /runs/{id}/trace`): its steps (decision, tool calls with their
        arguments and tasks, observations, repairs, compactions), final answer, state and error."""
        trace: dict[str, Any] = self.http.get(f"/runs/{run_id}/trace")
        return trace

    def list_runs(
        self,
        limit: int = 20,
        state: str | Iterable[str] | None = None,
        offset: int = 0,
        *,
        kind: str | Iterable[str] | None = None,
        created_after: When = None,
        created_before: When = None,
        search: str | None = None,
        sort: str = "created",
        order: str = "desc",
        cursor: str | None = None,
    ) -> RunPage:
        """Runs, newest first: a list of run snapshots that also carries `next_cursor` (pass it
        back as `cursor=`, with the same filters, for the next page; None after the last page).

        Filters, combined: `state` and `kind` (one or several), `created_after` (inclusive) and
        `created_before` (exclusive): a datetime (naive is UTC), ms since the epoch or ISO 8601;
        `search`: case-insensitive text in the workflow id or a task's or function's name.
        `sort`: "created" or "finished" (unfinished runs count as the latest); `order`: "desc" or
        "asc". `offset` still works, but a cursor is what stays fast deep into history."""
        return history.list_runs(
            self.http,
            history.run_params(
                limit, state, offset, kind, created_after, created_before, search, sort, order, cursor
            ),
        )

    def iter_runs(self, page_size: int = 200, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every run matching `filters` (the keywords of `list_runs`), page by page by cursor."""
        return history.iter_runs(self.http, history.run_params(page_size, **filters))

    def wait_run(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the run ends (following its live event stream, no polling) and return its
        final snapshot, as `get_run` gives it. Raises `WaitTimeout` (a TimeoutError) if it has not
        ended within `timeout` seconds (the run goes on), NotFound for a run the head never had."""
        return history.wait_run(self.http, run_id, timeout)

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with `prefix` (as a table shows it, with or
        without `run_`). NotFound when none does; ValidationError naming the candidates when
        several do. A run whose id is exactly `prefix` is that run."""
        found: list[str] = self.http.get(f"/run-ids/{prefix}", limit=RUN_ID_CANDIDATES + 1)["run_ids"]
        if len(found) == 1:
            return found[0]
        if not found:
            raise NotFound(f"run {prefix!r} not found (no run id starts with it)", run_id=prefix)
        shown = ", ".join(found[:RUN_ID_CANDIDATES]) + (", …" if len(found) > RUN_ID_CANDIDATES else "")
        raise ValidationError(
            f"{prefix!r} is the beginning of several run ids: {shown}; give more of it",
            run_id=prefix,
            candidates=found[:RUN_ID_CANDIDATES],
        )

    def get_run(self, run_id: str) -> dict[str, Any]:
        """A run's snapshot: state, timing, progress, error summary."""
        result: dict[str, Any] = self.http.get(f"/runs/{run_id}")
        return result

    def get_run_tasks(self, run_id: str, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """The run's tasks in submission order, with state, placement, result or structured error:
        all of them (fetched a page at a time), or `limit` from task index `offset`."""
        tasks: list[dict[str, Any]] = []
        while True:
            page_size = min(limit - len(tasks), TASKS_PAGE) if limit is not None else TASKS_PAGE
            resp = self.http.get_response(f"/runs/{run_id}/tasks", limit=page_size, offset=offset)
            page: list[dict[str, Any]] = resp.json()
            tasks += page
            if not page or "link" not in resp.headers or (limit is not None and len(tasks) >= limit):
                return tasks
            offset = page[-1]["task_index"] + 1

    def get_run_artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """The files the run's tasks created or changed (a run with a workspace or
        `artifact_mode=True`): one dict each with `task_id`, `attempt`, `path`, `sha256`,
        `size`, `node_id`, `at_ms` and `uri` (`maze://artifacts/sha256/<hex>`)."""
        return list_artifacts(self.http, run_id)

    def download_artifact(
        self, run_id: str, path: str, dest: str | os.PathLike[str] | None = None, task_id: str | None = None
    ) -> Path:
        """Save the run's artifact at `path` (of `task_id`, or of the last task that registered it)
        to `dest` (default: its file name in the current directory), streamed and checked against
        its sha256. Returns where it was written."""
        artifact = find_artifact(self.http, run_id, path, task_id)
        target = Path(dest) if dest is not None else Path(Path(path).name)
        download_blob(self.http, artifact["sha256"], target)
        return target

    def get_run_task(self, run_id: str, task_id: str) -> dict[str, Any]:
        """One task with all of its attempts."""
        result: dict[str, Any] = self.http.get(f"/runs/{run_id}/tasks/{task_id}")
        return result

    def follow_run_events(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The run's events live, from its start until it ends (SSE; resumes if the connection drops)."""
        return follow_events(self.http, run_id)

    def get_run_events(self, run_id: str, after: int | None = None) -> list[dict[str, Any]]:
        """All of the run's events in the log (after stream sequence `after`). A result value or input
        that is not plain data appears as a descriptor (`{"__maze_value__": ...}`): pass it to
        `load_value` for the value itself."""
        events: list[dict[str, Any]] = []
        while True:  # page by page (the head answers ~10,000 events at a time)
            result: dict[str, Any] = self.http.get(f"/runs/{run_id}/events", after=after or 0)
            events += result["events"]
            self.http.note_seen(int(result["last_seq"]))
            if not result.get("more") or int(result["last_seq"]) <= (after or 0):
                return events
            after = int(result["last_seq"])

    def cancel_run(self, run_id: str, reason: str = "") -> dict[str, Any]:
        """Cancel a run: queued attempts are withdrawn, running ones killed (with the processes
        they started), nothing of it starts later, and it ends `cancelled`. Returns
        `{"run_id", "state", "seq", "reason"}`: state `cancelled` once it has ended (as a rule
        within a second), `cancelling` if the head answered before. Raises Conflict when the run
        had already ended."""
        result: dict[str, Any] = self.http.post(f"/runs/{run_id}/cancel", json={"reason": reason})
        self.http.note_seen(int(result["seq"]))
        return result

    def retry_run(
        self, run_id: str, workspace_dir: str | None = None, failed_only: bool = False
    ) -> dict[str, Any]:
        """Run an ended run again as a new run of the same definition, linked to it (`retry_of` /
        `retried_by`). With `failed_only`, the tasks that succeeded keep their results and only
        the others run (the files they made travel in the new run's workspace). `workspace_dir`:
        the new run's workspace (its files uploaded as `run(workspace_dir=...)` does) instead of
        the old run's. Returns `{"run_id": <the new run>, "retry_of", "tasks", "carried", ...}`.
        Safe to call again after a lost answer: the same new run comes back."""
        body: dict[str, Any] = {"failed_only": failed_only, "run_id": f"run_{uuid.uuid4().hex}"}
        if workspace_dir is not None:
            directory = workspace_directory(workspace_dir)
            assert directory is not None
            body["workspace"] = upload_workspace(self.blobs, directory)
        for attempt in range(RETRY_POSTS + 1):
            try:
                result: dict[str, Any] = self.http.post(f"/runs/{run_id}/retry", json=body)
                break
            except Unreachable:
                raise
            except Unavailable:  # sent again as it was: the head gives the same new run back
                if attempt == RETRY_POSTS:
                    raise
                time.sleep(0.25 * 2**attempt)
        self.http.note_seen(int(result["seq"]))
        return result

    def get_run_logs(
        self, run_id: str, tail: int | None = 200, task_id: str | None = None
    ) -> list[dict[str, Any]]:
        """What the run's tasks printed: the last `tail` lines (every line with `tail=None`), of
        every task or of `task_id`'s, oldest first. A line is a dict: `task_id`, `attempt`,
        `node_id`, `stream` (`stdout`, `stderr`, or `maze` for Maze's own note that output past
        the per-attempt cap was cut), `at_ms`, `line`, and `cursor` (pass the last one to
        `follow_run_logs(after=...)` to go on from there)."""
        return get_logs(self.http, run_id, tail, task_id)

    def follow_run_logs(
        self, run_id: str, task_id: str | None = None, after: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """The run's lines live (SSE), from its start or after cursor `after`, until the run has
        ended and every line it printed is given; resumes by itself after a dropped connection."""
        return follow_logs(self.http, run_id, task_id, after)

    def exec_code(
        self,
        code: str,
        files: dict[str, str | bytes] | None = None,
        timeout_seconds: float = 30,
        cpu_mem: int | None = None,
    ) -> dict[str, Any]:
        """Run a snippet of Python in a sandbox on a node that has one (a run of one task, in the
        run history as any): `files` ({relative name: text or bytes}) are written where it runs
        first. Returns `stdout`, `stderr`, `exit_code` (-9 when killed at `timeout_seconds`,
        with `timed_out`), `files` (those it made or changed: text, or bytes when not UTF-8),
        `files_skipped` ({name: size} past the caps), `truncated` (streams cut at 1 MiB) and
        `run_id`. `cpu_mem`: the sandbox's memory in MB (default 1024; its output and temporary
        files count against it). Caps and guarantees: README, "Sandboxed execution"."""
        from maze.sdk.task import task
        from maze.tasks.exec_code import DEFAULT_CPU_MEM_MB, checked_name, checked_names, exec_code

        if not isinstance(code, str):
            raise ValidationError(f"code must be a string, got {type(code).__name__}")
        if not isinstance(timeout_seconds, int | float) or not 0 < timeout_seconds <= 24 * 3600:
            raise ValidationError(f"timeout_seconds must be a number in (0, 86400], got {timeout_seconds!r}")
        given = dict(files or {})
        for name, content in given.items():
            try:
                checked_name(name)
            except ValueError as exc:
                raise ValidationError(str(exc), file=str(name)) from exc
            if not isinstance(content, str | bytes):
                raise ValidationError(f"file {name!r} must be text or bytes, got {type(content).__name__}")
        try:
            checked_names(list(given))
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        memory = DEFAULT_CPU_MEM_MB if cpu_mem is None else cpu_mem
        if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
            raise ValidationError(f"cpu_mem must be a whole number of MB above 0, got {cpu_mem!r}")
        wf = self.create_workflow()
        # the attempt's own bound, past the snippet's (which the task enforces, saying so)
        fn = task(sandbox=True, timeout_seconds=float(timeout_seconds) + 60, resources={"cpu_mem": memory})(
            exec_code
        )
        t = wf.add_task(fn, inputs={"code": code, "files": given, "timeout_seconds": float(timeout_seconds)})
        run_id = wf.run()
        messages = wf.get_results(run_id, verbose=False)
        result = wf.get_task_result(run_id, t.task_id)
        if result is None:
            failure: dict[str, Any] = next((m["data"] for m in messages if m["type"] == "task_exception"), {})
            error = failure.get("error") or failure.get("exception") or "it has no result"
            raise RunFailed(f"exec_code run {run_id} failed: {error}", run_id=run_id, error=failure)
        produced: dict[str, str | bytes] = dict(result.get("files") or {})
        for name, data in (result.get("binary_files") or {}).items():
            produced[name] = base64.b64decode(data)
        out = {key: value for key, value in result.items() if key != "binary_files"}
        return {**out, "files": produced, "run_id": run_id}

    def submit_app(self, spec: str | os.PathLike[str] | App) -> str:
        """Submit a maze.yaml application (a path, or an App from `maze.sdk.app_spec.load_app`):
        its workspace uploaded, one task running its command; returns the run id (a run of kind
        `app` in the run history). An invalid spec raises AppSpecError (a ValidationError) with
        every error in `.errors`. README, "maze.yaml applications"."""
        from maze.sdk.app import as_app, submit_app

        return submit_app(self, as_app(spec))[0]

    def run_app(self, spec: str | os.PathLike[str] | App, timeout: float | None = None) -> dict[str, Any]:
        """Submit a maze.yaml application and wait for it to end (at most `timeout` seconds:
        WaitTimeout past it, the run goes on). Returns `run_id`, `state`, `exit_code`,
        `duration_s`, `error` (the task's structured error when it failed), `attempts` and
        `artifacts` (the files matching the spec's `artifacts` patterns)."""
        from maze.sdk.app import app_result

        run_id = self.submit_app(spec)
        self.wait_run(run_id, timeout=timeout)
        return app_result(self, run_id)

    def load_value(self, descriptor: dict[str, Any]) -> Any:
        """The value behind a descriptor from an event (or a blob descriptor from a task row): an
        inline pickle is unpickled, a `maze://artifacts/sha256/...` blob is fetched and checked
        against its hash. A task row's descriptor of an inline pickle carries only its type and
        size, and raises ValidationError saying to load it from the events."""
        return self.blobs.load(descriptor)

    def fetch_blob(self, sha256: str) -> bytes:
        """The bytes stored under `maze://artifacts/sha256/<sha256>`, checked against the hash."""
        return self.blobs.fetch(sha256)
