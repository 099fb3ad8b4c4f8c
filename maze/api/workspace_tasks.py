"""Workspace tasks: a person's own `@task` functions, written in the Playground's editor or
uploaded as a `.py` file, kept per named workspace for the workflow builder.

A task file is a workspace file (maze/events/workspace_files.py: the KV listing, the content in the
blob store) at `.maze/tasks/<file>`, so it is shared by every head and replicated like the rest;
runs of the workspace do not stage that folder. The head reads a file's tasks with the `ast`
module (maze/core/task_source.py) and never runs it: the code runs on a worker, as a
`SourceFunction` (maze/tasks/source.py). A file that does not parse is refused (400, with its line
and column) and nothing is stored; `POST /playground/tasks/parse` checks source without storing it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post, put
from litestar.params import Parameter
from msgspec import Struct

from maze.api.openapi import BYTES_SCHEMA, answers, documented, success
from maze.api.state import HeadState
from maze.api.workspaces import WorkspaceName
from maze.core.errors import NotFound, ValidationError
from maze.core.task_source import MAX_SOURCE_BYTES, TaskInfo, parse_tasks
from maze.events import workspace_files
from maze.events.artifacts import FileEntry

TASKS_DIR = ".maze/tasks/"
PRIVATE_DIR = ".maze/"  # what runs of the workspace do not stage
TASK_FILE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,60}\.py$"
WORKSPACE_REF = "workspace:"
SOURCE_MEDIA = {"text/x-python": BYTES_SCHEMA, "text/plain": BYTES_SCHEMA}  # UTF-8 text, checked by the route

TaskFileName = Annotated[
    str,
    Parameter(
        pattern=TASK_FILE_PATTERN,
        description="The task file's name: letters, digits, `_`, `.` or `-`, ending in `.py` (64 characters at most).",
    ),
]


class TaskFile(Struct):
    """A workspace's task file and the tasks it defines (`error`: why a file stored by another
    route does not parse; its tasks are then empty)."""

    file: str
    sha256: str
    size: int
    modified_ms: int
    tasks: list[TaskInfo]
    error: dict[str, Any] | None = None


class TaskSource(Struct):
    """A task file's source, for the editor."""

    file: str
    sha256: str
    source: str
    tasks: list[TaskInfo]


class ParsedTasks(Struct):
    tasks: list[TaskInfo]


def workspace_ref(file: str, func: str) -> str:
    return f"{WORKSPACE_REF}{file}:{func}"


def split_workspace_ref(ref: str) -> tuple[str, str] | None:
    """(file, function) of a `workspace:<file>:<function>` ref, else None."""
    if not ref.startswith(WORKSPACE_REF):
        return None
    file, sep, func = ref.removeprefix(WORKSPACE_REF).rpartition(":")
    return (file, func) if sep and file and func else None


def _decoded(body: bytes, file: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{file} is not UTF-8 text: {exc}", file=file) from None


# parsed files by (sha256, name): a listing parses each file once, not on every call
_parsed: OrderedDict[tuple[str, str], list[TaskInfo] | ValidationError] = OrderedDict()
_PARSED_KEPT = 256


async def _parse(source: str, file: str, sha: str | None = None) -> list[TaskInfo]:
    key = (sha, file) if sha else None
    found = _parsed.get(key) if key else None
    if found is None:
        try:
            found = await asyncio.to_thread(parse_tasks, source, file, f"{WORKSPACE_REF}{file}:")
        except ValidationError as exc:
            found = exc
        if key:
            _parsed[key] = found
            while len(_parsed) > _PARSED_KEPT:
                _parsed.popitem(last=False)
    if isinstance(found, ValidationError):
        raise found
    return found


async def read_task_file(
    head: HeadState, workspace: str, file: str
) -> tuple[workspace_files.WorkspaceFile, str]:
    """A task file's listing entry and source (404 when the workspace has no such file)."""
    try:
        stored = await workspace_files.get_file(head.js, workspace, TASKS_DIR + file)
    except NotFound:
        raise NotFound(
            f"workspace {workspace!r} has no task file {file!r}", workspace=workspace, file=file
        ) from None
    content = await head.blobs.get(stored.sha256) if stored.size else b""
    return stored, _decoded(content, file)


async def task_file_tasks(head: HeadState, workspace: str, file: str) -> tuple[str, list[TaskInfo]]:
    """(source, tasks) of one task file."""
    stored, source = await read_task_file(head, workspace, file)
    return source, await _parse(source, file, stored.sha256)


async def run_manifest(head: HeadState, workspace: str) -> list[FileEntry]:
    """The files a run of the workspace stages: all of them but its `.maze/` folder."""
    files = await workspace_files.list_files(head.js, workspace)
    return [FileEntry(f.path, f.sha256, f.size) for f in files if not f.path.startswith(PRIVATE_DIR)]


@get("/workspaces/{name:str}/tasks", responses=answers(400, 503))
async def list_workspace_tasks(name: WorkspaceName, head: HeadState) -> list[TaskFile]:
    """The workspace's task files, by name, each with the tasks it defines (none for a workspace
    that holds none): each task's `ref` names it in a graph node."""
    listed = await workspace_files.list_files(head.js, name, TASKS_DIR)
    found = []
    for stored in listed:
        file = stored.path.removeprefix(TASKS_DIR)
        tasks: list[TaskInfo] = []
        error = None
        try:
            content = await head.blobs.get(stored.sha256) if stored.size else b""
            tasks = await _parse(_decoded(content, file), file, stored.sha256)
        except ValidationError as exc:
            error = exc.to_dict()
        found.append(TaskFile(file, stored.sha256, stored.size, stored.modified_ms, tasks, error))
    return found


@put(
    "/workspaces/{name:str}/tasks/{file:str}",
    status_code=201,
    request_max_body_size=MAX_SOURCE_BYTES,
    responses=answers(400, 409, 413, 503) | success(200, TaskFile, "Replaced the task file."),
    operation_class=documented(
        raw_body=SOURCE_MEDIA,
        body_description="The file's Python source (UTF-8, 1 MiB at most).",
        body_required=False,
    ),
)
async def put_workspace_task_file(
    name: WorkspaceName, file: TaskFileName, request: Request[Any, Any, Any], head: HeadState
) -> Response[TaskFile]:
    """Store a task file (201 new, 200 replaced) once its source parses: a syntax error, or a
    `@task` whose arguments are not literals, is a 400 whose `details` hold `line` and `column`,
    and nothing is stored. The answer lists the tasks it defines."""
    body = await request.body()
    source = _decoded(body, file)
    tasks = await _parse(source, file)

    async def one_chunk() -> AsyncIterator[bytes]:
        yield body

    stored, created = await workspace_files.put_file(
        head.js, head.blobs, name, TASKS_DIR + file, one_chunk(), MAX_SOURCE_BYTES
    )
    answer = TaskFile(file, stored.sha256, stored.size, stored.modified_ms, tasks)
    return Response(answer, status_code=201 if created else 200)


@get("/workspaces/{name:str}/tasks/{file:str}", responses=answers(400, 404, 503))
async def get_workspace_task_file(name: WorkspaceName, file: TaskFileName, head: HeadState) -> TaskSource:
    """A task file's source and tasks (for the editor). 400 when what is stored there no longer
    parses (stored by the files routes)."""
    stored, source = await read_task_file(head, name, file)
    return TaskSource(file, stored.sha256, source, await _parse(source, file, stored.sha256))


@delete("/workspaces/{name:str}/tasks/{file:str}", status_code=200, responses=answers(400, 404, 409, 503))
async def delete_workspace_task_file(
    name: WorkspaceName, file: TaskFileName, head: HeadState
) -> workspace_files.WorkspaceFile:
    """Remove a task file (404 when there is none). Saved workflows that use its tasks then name
    unknown tasks (their validation says so)."""
    try:
        return await workspace_files.delete_file(head.js, name, TASKS_DIR + file)
    except NotFound:
        raise NotFound(f"workspace {name!r} has no task file {file!r}", workspace=name, file=file) from None


@post(
    "/playground/tasks/parse",
    status_code=200,
    request_max_body_size=MAX_SOURCE_BYTES,
    responses=answers(400, 413),
    operation_class=documented(
        raw_body=SOURCE_MEDIA,
        body_description="Python source (UTF-8, 1 MiB at most).",
        body_required=False,
    ),
)
async def parse_task_source(
    request: Request[Any, Any, Any],
    file: Annotated[
        str,
        Parameter(query="file", pattern=TASK_FILE_PATTERN, description="The name errors give the source."),
    ] = "tasks.py",
) -> ParsedTasks:
    """The tasks the source defines, read without running it and without storing anything: a
    syntax error is a 400 whose `details` hold `line` and `column`."""
    return ParsedTasks(await _parse(_decoded(await request.body(), file), file))
