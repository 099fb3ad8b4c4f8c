"""Submitting a maze.yaml application (maze/sdk/app_spec.py) as a run of kind `app`: its workspace
uploaded like any run's (maze/sdk/workspace.py), one task (maze/tasks/app_command.py) that runs the
command, with the spec's resources, timeout, retries and artifact patterns."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maze.sdk.app_spec import App, load_app
from maze.sdk.task import task

if TYPE_CHECKING:
    from maze.sdk.client import MaClient

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


def as_app(spec: str | os.PathLike[str] | App) -> App:
    return spec if isinstance(spec, App) else load_app(Path(spec))


def submit_app(
    client: MaClient, app: App, upload_progress: Callable[[int, int], None] | None = None
) -> tuple[str, str]:
    """Submit the app; (run id, its task's id)."""
    from maze.tasks.app_command import app_command

    s = app.spec
    resources: dict[str, Any] = {
        "cpu": s.resources.cpu,
        "cpu_mem": s.resources.cpu_mem,
        "gpu": s.resources.gpu,
        "gpu_mem": s.resources.gpu_mem,
    }
    fn = task(
        resources=resources,
        timeout_seconds=s.timeout_seconds,
        max_retries=s.retries.max,
        retry_backoff_seconds=s.retries.backoff_seconds,
        retry_on=list(s.retries.on),
        sandbox=s.sandbox,
        network=s.network,
        # only the files the spec names are the run's artifacts; none when it names none
        artifacts=list(s.artifacts),
    )(app_command)
    wf = client.create_workflow()
    wf.kind = "app"
    wf.upload_progress = upload_progress
    sent = {
        "name": s.name,
        "argv": app.argv,
        "vars": {k: str(v) for k, v in s.env.vars.items()},
        "conda": app.conda,
    }
    t = wf.add_task(fn, inputs={"app": sent}, task_name=s.name)
    run_id = wf.run(workspace_dir=str(app.workspace_dir))
    return run_id, t.task_id


def app_result(client: MaClient, run_id: str) -> dict[str, Any]:
    """An ended app run's outcome: `run_id`, `state`, `exit_code` (None when the command never
    ran to an exit), `duration_s` (the command's, else the run's), `error` (the task's structured
    error, or None), `attempts` and `artifacts`."""
    run = client.get_run(run_id)
    tasks = client.get_run_tasks(run_id)
    one = tasks[0] if tasks else {}
    result = one.get("result") or {}
    error = one.get("error")
    exit_code = result.get("exit_code") if isinstance(result, dict) else None
    duration = result.get("duration_s") if isinstance(result, dict) else None
    if exit_code is None:
        exit_code = _failed_exit_code(error)
    if duration is None and run.get("finished_at_ms") and run.get("started_at_ms"):
        duration = round((run["finished_at_ms"] - run["started_at_ms"]) / 1000, 3)
    return {
        "run_id": run_id,
        "state": run.get("state"),
        "exit_code": exit_code,
        "duration_s": duration,
        "error": error,
        "attempts": one.get("attempt"),
        "artifacts": client.get_run_artifacts(run_id),
    }


def _failed_exit_code(error: Any) -> int | None:
    """The command's exit code from its failure (app_command says `exited with code N`)."""
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "")
    marker = "exited with code "
    if marker in message:
        digits = message.split(marker, 1)[1].split()[0]
        try:
            return int(digits)
        except ValueError:
            return None
    return None
