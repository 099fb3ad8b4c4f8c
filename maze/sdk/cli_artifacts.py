"""`maze artifacts list|get`: a run's artifacts from the command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from maze.core.errors import MazeError
from maze.sdk.artifacts import download_blob, find_artifact
from maze.sdk.cli import RunIdArg, ServerUrl, Token, _call, _client, _run_id, console, fail

artifacts_app = typer.Typer(help="A run's artifacts: the files its tasks made.", no_args_is_help=True)
PROGRESS_FROM_BYTES = 8 * 1024 * 1024  # smaller files come without a progress bar


@artifacts_app.command("list")
def artifacts_list(run_id: str = RunIdArg, server_url: str = ServerUrl, token: str | None = Token) -> None:
    """The files a run's tasks created or changed: task, attempt, path, size, sha256."""
    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    found = _call(client.get_run_artifacts, run_id)
    if not found:
        console.print(f"run {run_id} registered no artifacts", highlight=False)
        return
    table = Table("task", "attempt", "path", "size", "sha256")
    for a in found:
        table.add_row(a["task_id"], str(a["attempt"]), a["path"], str(a["size"]), a["sha256"])
    console.print(table)


@artifacts_app.command("get")
def artifacts_get(
    run_id: str = RunIdArg,
    path: str = typer.Argument(..., help="The artifact's path, relative to its task's directory."),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Write it here (default: its file name, in the current directory)."
    ),
    task_id: str | None = typer.Option(
        None, "--task-id", help="The artifact of this task (default: the last task that registered the path)."
    ),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """Download one artifact, streamed and checked against its sha256 (nothing is written when it
    does not match)."""
    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    artifact = _call(find_artifact, client.http, run_id, path, task_id)
    dest = Path(output) if output else Path(Path(path).name)
    try:
        if artifact["size"] < PROGRESS_FROM_BYTES:
            download_blob(client.http, artifact["sha256"], dest)
        else:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
            ) as progress:
                bar = progress.add_task(path, total=artifact["size"])
                download_blob(client.http, artifact["sha256"], dest, lambda n: progress.advance(bar, n))
    except MazeError as exc:
        fail(exc.message)
    console.print(f"{dest} ({artifact['size']} bytes, sha256 {artifact['sha256']})", highlight=False)
