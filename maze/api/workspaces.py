"""Workspace routes: named workspaces of files for people (the Playground, `maze workspace`):
list, upload (streamed, within `--workspace-file-max-mb`), download (streamed), preview, delete.
Storage: maze/events/workspace_files.py (shared by every head of the cluster); path rules:
maze/core/paths.py, applied to the path exactly as it came in the request line."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any, cast
from urllib.parse import quote, unquote_to_bytes

from litestar import Request, Response, delete, get, put
from litestar.params import Parameter
from litestar.response import Stream
from msgspec import Struct

from maze.api.openapi import BYTES_SCHEMA, answers, documented, success
from maze.api.previews import HEAD_BYTES, Kind, preview
from maze.api.state import HeadState
from maze.core.errors import ValidationError
from maze.core.paths import (
    MAX_PATH_CHARS,
    PATH_PATTERN,
    PREFIX_PATTERN,
    WORKSPACE_NAME_PATTERN,
    check_prefix,
    check_relative_path,
)
from maze.events import workspace_files
from maze.events.workspace_files import WorkspaceFile, workspace_manifest

__all__ = ["workspace_manifest"]  # for runs that stage a named workspace

WHOLE_FILE_BYTES = 8 * 1024 * 1024  # downloads up to this size are read and checked before sending

WorkspaceName = Annotated[
    str,
    Parameter(
        pattern=WORKSPACE_NAME_PATTERN,
        description="A workspace's name: 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit.",
    ),
]
FilePath = Annotated[
    str,
    Parameter(
        # checked by the route on the request line itself (maze/core/paths.py), not by Litestar,
        # whose `path` parameters come normalised ('a//b' -> 'a/b')
        schema_extra={"pattern": PATH_PATTERN, "maxLength": MAX_PATH_CHARS},
        description="The file's path in the workspace, relative, `/` between directories: no empty, `.` "
        "or `..` segment, no backslash, no control character; at most 1,024 characters, 255 a segment, "
        "32 segments.",
    ),
]
Prefix = Annotated[
    str,
    Parameter(
        query="prefix",
        schema_extra={"pattern": PREFIX_PATTERN, "maxLength": MAX_PATH_CHARS},
        description="Only files whose path starts with this (e.g. `data/` or `data/tr`).",
    ),
]


class WorkspaceSummary(Struct):
    """A workspace that holds files: how many, and their bytes in all."""

    name: str
    files: int
    bytes: int


class WorkspaceDeleted(Struct):
    workspace: str
    deleted: int


class FilePreview(Struct):
    """A file's preview. `kind`: `text` (`lines`), `csv` (`columns`, `rows`), `image` (`width`,
    `height`: null when not found in the file's first 256 KiB; the bytes at `download`) or
    `binary` (type and size only). `truncated`: the file holds more than is shown."""

    path: str
    kind: Kind
    content_type: str
    size: int
    sha256: str
    download: str
    truncated: bool = False
    lines: list[str] | None = None
    columns: list[str] | None = None
    rows: list[list[str]] | None = None
    width: int | None = None
    height: int | None = None


def requested_path(request: Request[Any, Any, Any]) -> str:
    """The file path exactly as the request line has it (`/workspaces/<name>/<route>/<path>`),
    percent-decoded once and checked: Litestar's `path` parameter comes normalised (`a//b`,
    `/abs`), which would let a refused spelling through as another path."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    parts = raw.split(b"/", 4)
    if len(parts) < 5:
        raise ValidationError("the request names no file path", extra=[{"key": "path"}])
    try:
        path = unquote_to_bytes(parts[4]).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("the file path is not UTF-8", extra=[{"key": "path"}]) from None
    return check_relative_path(path)


def _download_url(name: str, path: str) -> str:
    return f"/workspaces/{name}/files/{quote(path, safe='/')}"


def _limit(head: HeadState) -> int:
    return min(head.settings.workspace_file_max_bytes, head.settings.limits.blob_max_bytes)


@get("/workspaces", responses=answers(503))
async def list_workspaces(head: HeadState) -> list[WorkspaceSummary]:
    """Every workspace that holds files, by name, with its file count and bytes."""
    found = await workspace_files.list_workspaces(head.js)
    return [WorkspaceSummary(name=n, files=f, bytes=b) for n, (f, b) in found.items()]


@get("/workspaces/{name:str}/files", responses=answers(400, 503))
async def list_workspace_files(
    name: WorkspaceName, head: HeadState, prefix: Prefix = ""
) -> list[WorkspaceFile]:
    """A workspace's files, by path (none for a workspace that holds none)."""
    return await workspace_files.list_files(head.js, name, check_prefix(prefix))


@put(
    "/workspaces/{name:str}/files/{path:path}",
    status_code=201,
    request_max_body_size=None,  # bounded by the route: --workspace-file-max-mb
    responses=answers(400, 409, 413, 503) | success(200, WorkspaceFile, "Replaced the file at that path."),
    operation_class=documented(
        raw_body={"application/octet-stream": BYTES_SCHEMA},
        body_description="The file's content, streamed: at most `--workspace-file-max-mb` (413 beyond, "
        "nothing stored).",
        body_required=False,
    ),
)
async def put_workspace_file(
    name: WorkspaceName, path: FilePath, request: Request[Any, Any, Any], head: HeadState
) -> Response[WorkspaceFile]:
    """Store the body as this file (201 new, 200 replaced). It streams into the blob store, hashed
    as it comes (identical content is stored once); the listing changes only once all of it is
    stored, so an upload refused (413) or cut midway leaves the file there as it was. 409: a
    directory on the way is a file, or the path is a directory holding files."""
    checked = requested_path(request)
    limit = _limit(head)
    if request.content_length is not None and request.content_length > limit:
        raise workspace_files.file_too_large(request.content_length, limit)
    stored, created = await workspace_files.put_file(
        head.js, head.blobs, name, checked, request.stream(), limit
    )
    return Response(stored, status_code=201 if created else 200)


@get(
    "/workspaces/{name:str}/files/{path:path}",
    responses=answers(400, 404, 503),
    operation_class=documented(content=(200, {"*/*": BYTES_SCHEMA})),
)
async def get_workspace_file(
    name: WorkspaceName, path: FilePath, request: Request[Any, Any, Any], head: HeadState
) -> Response[bytes] | Stream:
    """The file's bytes, as an attachment, its Content-Type guessed from its name. They are checked
    against their sha256 (ETag) as they pass: a corrupt file is a 500 up to 8 MB, and cut short
    before its last chunk above."""
    checked = requested_path(request)
    stored = await workspace_files.get_file(head.js, name, checked)
    headers = {
        "etag": f'"{stored.sha256}"',
        "content-disposition": _attachment(checked.rsplit("/", 1)[-1]),
        "x-content-type-options": "nosniff",
    }
    if stored.size <= WHOLE_FILE_BYTES:
        content = await head.blobs.get(stored.sha256) if stored.size else b""
        return Response(content, media_type=stored.content_type, headers=headers)
    return Stream(
        head.blobs.stream(stored.sha256),
        media_type=stored.content_type,
        headers={**headers, "content-length": str(stored.size)},
    )


def _attachment(filename: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


@get("/workspaces/{name:str}/preview/{path:path}", responses=answers(400, 404, 500, 503))
async def preview_workspace_file(
    name: WorkspaceName,
    path: FilePath,
    request: Request[Any, Any, Any],
    head: HeadState,
    lines: Annotated[int, Parameter(ge=1, le=1000, description="Text: at most this many lines.")] = 50,
    rows: Annotated[int, Parameter(ge=1, le=1000, description="CSV: at most this many rows.")] = 20,
) -> FilePreview:
    """What the file holds, from its first 256 KiB at most: text → its first lines; CSV/TSV →
    header and first rows; an image → its type and dimensions (its bytes at `download`); anything
    else → type and size."""
    checked = requested_path(request)
    stored = await workspace_files.get_file(head.js, name, checked)
    first = bytearray()
    if stored.size:
        chunks = cast(AsyncGenerator[bytes], head.blobs.stream(stored.sha256))
        try:
            async for chunk in chunks:
                first += chunk
                if len(first) >= HEAD_BYTES:
                    break
        finally:
            await chunks.aclose()
    shown = preview(
        checked, stored.content_type, bytes(first[:HEAD_BYTES]), stored.size <= HEAD_BYTES, lines, rows
    )
    return FilePreview(
        path=checked,
        kind=shown.kind,
        content_type=shown.content_type,
        size=stored.size,
        sha256=stored.sha256,
        download=_download_url(name, checked),
        truncated=shown.truncated,
        lines=shown.lines,
        columns=shown.columns,
        rows=shown.rows,
        width=shown.width,
        height=shown.height,
    )


@delete("/workspaces/{name:str}/files/{path:path}", status_code=200, responses=answers(400, 404, 409, 503))
async def delete_workspace_file(
    name: WorkspaceName, path: FilePath, request: Request[Any, Any, Any], head: HeadState
) -> WorkspaceFile:
    """Remove the file from the workspace (404 when there is none; 409 when it was replaced while
    being deleted: the newer one is kept). Answers what was removed."""
    return await workspace_files.delete_file(head.js, name, requested_path(request))


@delete("/workspaces/{name:str}", status_code=200, responses=answers(400, 404, 503))
async def delete_workspace(name: WorkspaceName, head: HeadState) -> WorkspaceDeleted:
    """Remove every file of the workspace (404 when it holds none). A file replaced while this
    runs is kept."""
    return WorkspaceDeleted(workspace=name, deleted=await workspace_files.delete_workspace(head.js, name))
