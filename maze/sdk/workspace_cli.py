"""`maze workspace ls|put|get|rm`: workspace files from the command line (README "Workspaces")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from maze.core.errors import MazeError
from maze.core.paths import check_relative_path, check_workspace_name
from maze.sdk.cli import ServerUrl, Token, _client, _ms, console, fail
from maze.sdk.workspaces import Progress as OnBytes
from maze.sdk.workspaces import local_files

workspace_app = typer.Typer(help="Workspace files: list, upload, download, remove.", no_args_is_help=True)


@contextmanager
def _progress(description: str, total: int) -> Iterator[OnBytes]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task(description, total=total or None)
        yield lambda n: progress.advance(bar, n)


@workspace_app.command("ls")
def workspace_ls(
    name: str = typer.Argument(None, help="A workspace: list its files (else list the workspaces)."),
    prefix: str = typer.Option(None, "--prefix", help="Only files whose path starts with this."),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """The workspaces (files and bytes each), or one workspace's files."""
    client = _client(server_url, token)
    try:
        if name is None:
            table = Table("workspace", "files", "bytes")
            for w in client.list_workspaces():
                table.add_row(w["name"], str(w["files"]), str(w["bytes"]))
        else:
            table = Table("path", "size", "modified", "type", "sha256")
            for f in client.list_workspace_files(name, prefix=prefix):
                table.add_row(
                    f["path"], str(f["size"]), _ms(f["modified_ms"]), f["content_type"], f["sha256"][:12]
                )
    except MazeError as exc:
        fail(exc.message)
    console.print(table)


@workspace_app.command("put")
def workspace_put(
    name: str = typer.Argument(..., help="The workspace."),
    local: Path = typer.Argument(..., help="A file, or a directory (uploaded with everything under it)."),
    path: str = typer.Option(
        None, "--path", help="Where in the workspace (default: the file's name; for a directory, its top)."
    ),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """Upload a file or a directory (recursively) into a workspace, showing progress."""
    client = _client(server_url, token)
    try:
        check_workspace_name(name)
        if path:
            check_relative_path(path, "--path")
        if local.is_dir():
            files = local_files(local)  # every path and link checked before the first byte goes
            total = sum(f.stat().st_size for f, _ in files)
            with _progress(f"{local} → {name}", total) as on_bytes:
                stored = client.upload_workspace_dir(name, local, prefix=path or "", progress=on_bytes)
            console.print(f"{len(stored)} file(s), {total} bytes into workspace {name}", highlight=False)
        elif local.is_file():
            with _progress(f"{local.name} → {name}", local.stat().st_size) as on_bytes:
                one = client.upload_workspace_file(name, local, path, progress=on_bytes)
            console.print(f"{one['path']}: {one['size']} bytes, sha256 {one['sha256']}", highlight=False)
        else:
            fail(f"{local}: no such file or directory")
    except MazeError as exc:
        fail(exc.message)


@workspace_app.command("get")
def workspace_get(
    name: str = typer.Argument(..., help="The workspace."),
    path: str = typer.Argument(..., help="The file's path in the workspace."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Where to write it (a file, or a directory; default: its name here)."
    ),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """Download a workspace file (checked against its sha256), showing progress."""
    client = _client(server_url, token)
    try:
        check_relative_path(path)
        found = [f for f in client.list_workspace_files(name, prefix=path) if f["path"] == path]
        if not found:
            fail(f"workspace {name!r} has no file {path!r}")
        size = found[0]["size"]
        with _progress(f"{path} ← {name}", size) as on_bytes:
            where = client.download_workspace_file(name, path, output or Path("."), progress=on_bytes)
    except MazeError as exc:
        fail(exc.message)
    console.print(f"{where}", highlight=False)


@workspace_app.command("rm")
def workspace_rm(
    name: str = typer.Argument(..., help="The workspace."),
    path: str = typer.Argument(..., help="The file's path in the workspace."),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """Remove a file from a workspace."""
    try:
        removed = _client(server_url, token).delete_workspace_file(name, path)
    except MazeError as exc:
        fail(exc.message)
    console.print(f"removed {removed['path']} from workspace {name}", highlight=False)
