"""Built-in tools for ReAct agents (`client.create_react_workflow(tools=[read_file, write_file,
exec_code])`), each a task like any other, run in the attempt's directory: a ReAct run has a
workspace, so that directory holds the workspace's files and those the run's earlier steps made
(each step runs after the one before: maze/head/agent.py), and a file a tool writes is registered
as an artifact that later steps see. Paths are relative and confined to that directory (the path
rules of maze/core/paths.py; a symbolic link that leads outside is refused too). `exec_code` is
maze/tasks/exec_code.py's (sandboxed; its default timeout is the run's `task_timeout`).

`read_skill_file` is registered by the SDK when the workflow has skills: it reads a file of a
skill's folder, which travels in the workspace under `.skills/<name>/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maze.core.errors import NotFound, ValidationError
from maze.core.paths import check_relative_path, resolve_inside
from maze.sdk.task import task
from maze.tasks.exec_code import exec_code

READ_CAP_BYTES = 1024 * 1024
SKILLS_DIR = ".skills"

__all__ = ["exec_code", "read_file", "read_skill_file", "write_file"]


def _read(root: Path, path: str, what: str) -> dict[str, Any]:
    target = resolve_inside(root, path)
    if not target.is_file():
        raise NotFound(f"{what} {path!r} does not exist", path=path)
    with target.open("rb") as f:
        data = f.read(READ_CAP_BYTES + 1)
    text = data[:READ_CAP_BYTES].decode("utf-8", "replace")
    return {
        "path": path,
        "content": text,
        "size": target.stat().st_size,
        "truncated": len(data) > READ_CAP_BYTES,
    }


@task
def read_file(path: str) -> dict[str, Any]:
    """Read a text file of the run's workspace (a relative path); at most 1 MiB of it is returned
    (`truncated` says when there is more)."""
    return _read(Path.cwd(), path, "file")


@task
def write_file(path: str, content: str) -> dict[str, Any]:
    """Write `content` (text) to a file of the run's workspace (a relative path; its folders are
    made); later steps see it."""
    root = Path.cwd()
    relative = check_relative_path(path)
    if relative.split("/")[0] == SKILLS_DIR:
        raise ValidationError(
            f"path {relative!r} is refused: {SKILLS_DIR}/ holds the run's skills", path=relative
        )
    target = resolve_inside(root, relative)  # a link on the way must not lead outside
    _make_folders_inside(root, relative)
    data = content.encode()
    target.write_bytes(data)
    return {"path": relative, "bytes": len(data)}


def _make_folders_inside(root: Path, relative: str) -> None:
    """The folders of `relative` under `root`, made one at a time, none of them a link (an
    existing one that is a link is refused): nothing is made outside the workspace first."""
    here = root
    for part in relative.split("/")[:-1]:
        here = here / part
        if here.is_symlink():
            raise ValidationError(f"path {relative!r} is refused: {part!r} is a link", path=relative)
        if not here.exists():
            here.mkdir()


@task
def read_skill_file(skill_name: str, file_name: str = "SKILL.md") -> dict[str, Any]:
    """Read a file of a skill's folder (SKILL.md, reference.md, examples.md, ...): `skill_name` as
    the catalog names it, `file_name` relative to the skill's folder."""
    name = check_relative_path(skill_name, "skill name")
    if "/" in name:
        raise ValidationError(f"skill name {skill_name!r} is refused: it names a folder of its own")
    folder = Path.cwd() / SKILLS_DIR / name
    if not folder.is_dir():
        raise NotFound(f"skill {skill_name!r} is not one of this run's skills", skill=skill_name)
    return {"skill": name, **_read(folder, file_name, f"file of skill {name!r}")}
