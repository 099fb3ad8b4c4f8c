"""`maze app validate maze.yaml` and `maze run maze.yaml [--wait]`: application runs from the command
line (README, "maze.yaml applications")."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from maze.core.errors import MazeError
from maze.sdk.app_spec import App, AppSpecError, load_app
from maze.sdk.cli import ServerUrl, Token, _client, console, fail

app_app = typer.Typer(help="maze.yaml applications.", no_args_is_help=True)
SpecArg: Any = typer.Argument(..., help="The app's spec, a maze.yaml file.")
LOGS_AFTER_END_S = 15.0  # how long the logs may take to finish after the run has ended


def _load(path: str) -> App:
    """The valid app, or each error on its own line and exit 1."""
    try:
        return load_app(Path(path))
    except AppSpecError as exc:
        for error in exc.errors:
            typer.echo(f"{path}: {error}", err=True)
        typer.echo(f"{path}: {len(exc.errors)} error(s)", err=True)
        raise typer.Exit(1) from exc


@app_app.command("validate")
def app_validate(spec: str = SpecArg) -> None:
    """Check a maze.yaml: every error on its own line (`field.path: message`), exit 1 if any."""
    loaded = _load(spec)
    s = loaded.spec
    r = s.resources
    console.print(
        f"{spec}: valid app {s.name!r}: {' '.join(loaded.argv)}"
        f"{' (shell)' if s.shell else ''}{' (sandboxed)' if s.sandbox else ''}\n"
        f"  workspace {loaded.workspace_dir}; cpu {r.cpu:g}, cpu_mem {r.cpu_mem} MB, gpu {r.gpu:g}, "
        f"gpu_mem {r.gpu_mem} MB; timeout {s.timeout_seconds or 'none'}; retries {s.retries.max}"
        f"{' on ' + ', '.join(s.retries.on) if s.retries.on else ''}; artifacts "
        f"{', '.join(s.artifacts) or 'none'}",
        highlight=False,
        soft_wrap=True,
    )


def run_command(
    spec: str = SpecArg,
    wait: bool = typer.Option(
        False, "--wait", "-w", help="Follow the run to its end, then print its result and artifacts."
    ),
    logs: bool = typer.Option(
        True, "--logs/--no-logs", help="With --wait: print the command's lines as they come."
    ),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """Run a maze.yaml application: its workspace uploaded, its command run on a node that fits
    its resources. Prints the run id; with --wait, follows it and exits 1 unless it succeeded."""
    from maze.sdk.app import app_result, submit_app

    loaded = _load(spec)
    client = _client(server_url, token)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console, transient=True
    ) as progress:
        bar = progress.add_task(f"uploading {loaded.workspace_dir}", total=None)

        def uploaded(sent: int, total: int) -> None:
            progress.update(bar, completed=sent, total=total)

        try:
            run_id, _ = submit_app(client, loaded, uploaded)
        except MazeError as exc:
            fail(exc.message)
    if not wait:
        typer.echo(run_id)
        return
    console.print(f"run {run_id} (app {loaded.spec.name!r}) submitted", highlight=False)
    try:
        _follow(client, run_id, logs)
        result = app_result(client, run_id)
    except MazeError as exc:
        fail(exc.message)
    _show_result(result)
    if result["state"] != "succeeded":
        raise typer.Exit(1)


def _follow(client: Any, run_id: str, logs: bool) -> None:
    """Until the run ends: its state and elapsed time live, its lines printed as they come."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task("queued", total=None)
        printer: threading.Thread | None = None
        if logs:

            def print_logs() -> None:
                try:
                    for line in client.follow_run_logs(run_id):
                        progress.console.print(
                            _line_text(line), highlight=False, markup=False, soft_wrap=True
                        )
                except MazeError as exc:
                    progress.console.print(f"(logs: {exc.message})", highlight=False, markup=False)

            printer = threading.Thread(target=print_logs, name="maze-run-logs", daemon=True)
            printer.start()
        for event in client.follow_run_events(run_id):
            kind, attempt = event.get("type"), event.get("attempt")
            if kind == "attempt.placed":
                progress.update(bar, description=f"queued on {event.get('node_id')} (attempt {attempt})")
            elif kind == "attempt.started":
                progress.update(bar, description=f"running on {event.get('node_id')} (attempt {attempt})")
            elif kind == "retry.scheduled":
                progress.update(bar, description=f"attempt {attempt} failed; retrying")
            elif kind == "run.finished":
                progress.update(bar, description=str(event.get("state")))
                break
        if printer is not None:
            printer.join(LOGS_AFTER_END_S)


def _line_text(line: dict[str, Any]) -> str:
    return f"{line['task_id'][:13]}#{line['attempt']} {line['stream']:<6} {line['line']}"


def _show_result(result: dict[str, Any]) -> None:
    state = result["state"]
    color = "green" if state == "succeeded" else "red"
    exit_code = result["exit_code"]
    console.print(
        f"[{color}]{state}[/{color}]  run {result['run_id']}  exit code "
        f"{'-' if exit_code is None else exit_code}  duration "
        f"{'-' if result['duration_s'] is None else format(result['duration_s'], 'g') + 's'}  "
        f"attempts {result['attempts']}",
        highlight=False,
        soft_wrap=True,
    )
    error = result["error"]
    if error:
        console.print(
            f"error ({error.get('error_type')}): {error.get('message')}", highlight=False, markup=False
        )
    artifacts = result["artifacts"]
    if not artifacts:
        console.print("no artifacts", highlight=False)
        return
    table = Table("path", "size", "sha256", title="artifacts")
    for a in artifacts:
        table.add_row(a["path"], str(a["size"]), a["sha256"])
    console.print(table)
