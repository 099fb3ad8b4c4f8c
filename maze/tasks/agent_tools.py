"""Built-in tools for ReAct agents (`client.create_react_workflow(tools=[read_file, write_file,
exec_code])`), each a task like any other, run in the attempt's directory: a ReAct run has a
workspace, so that directory holds the workspace's files and those the run's earlier steps made
(each step runs after the one before: maze/head/agent.py), and a file a tool writes is registered
as an artifact that later steps see. Paths are relative and confined to that directory (the path
rules of maze/core/paths.py; a symbolic link that leads outside is refused too). `exec_code` runs
maze/tasks/exec_code.py's (sandboxed; its default timeout is the run's `task_timeout`).

What a tool returns stays well under the inline value limit (256 KiB), so the agent sees it as data
rather than as a stored blob's descriptor: `read_file` returns at most READ_CAP_BYTES from
`offset` (the rest by further calls), `exec_code` at most STREAM_CAP_BYTES of each stream and
FILES_CAP_BYTES of file contents (the files stay in the workspace, for `read_file`).

`read_skill_file` is registered by the SDK when the workflow has skills: it reads a file of a
skill's folder, which travels in the workspace under `.skills/<name>/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maze.core.errors import NotFound, ValidationError
from maze.core.paths import check_relative_path, resolve_inside
from maze.sdk.task import task
from maze.tasks import exec_code as sandboxed

READ_CAP_BYTES = 64 * 1024
STREAM_CAP_BYTES = 32 * 1024
FILES_CAP_BYTES = 64 * 1024
SKILLS_DIR = ".skills"

__all__ = ["exec_code", "read_file", "read_skill_file", "write_file"]


def _read(root: Path, path: str, what: str, offset: int = 0, limit: int = READ_CAP_BYTES) -> dict[str, Any]:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationError(f"offset must be an integer >= 0, got {offset!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= READ_CAP_BYTES:
        raise ValidationError(f"limit must be an integer in 1..{READ_CAP_BYTES}, got {limit!r}")
    target = resolve_inside(root, path)
    if not target.is_file():
        raise NotFound(f"{what} {path!r} does not exist", path=path)
    size = target.stat().st_size
    with target.open("rb") as f:
        f.seek(offset)
        data = f.read(limit)
    end = offset + len(data)
    return {
        "path": path,
        "content": data.decode("utf-8", "replace"),
        "size": size,
        "offset": offset,
        "truncated": end < size,
        "next_offset": end if end < size else None,
    }


@task
def read_file(path: str, offset: int = 0, limit: int = READ_CAP_BYTES) -> dict[str, Any]:
    """Read a text file of the run's workspace (a relative path): at most `limit` bytes (64 KiB at
    most) from byte `offset`; `truncated` says there is more, `next_offset` where to go on.

    Args:
        path: the file, relative to the workspace
        offset: the byte to start at (0: the start)
        limit: how many bytes to read, 1..65536
    """
    return _read(Path.cwd(), path, "file", offset, limit)


@task(sandbox=True)
def exec_code(
    code: str = "", files: dict[str, Any] | None = None, timeout_seconds: float = 30.0
) -> dict[str, Any]:
    """Run a Python snippet (`python -` in a sandbox: no network) in the run's workspace: its exit
    code, its stdout and stderr (32 KiB of each at most) and the files it made or changed (their
    contents up to 64 KiB in all; the others are named in `files_skipped` with their sizes: read
    them with read_file). `truncated` names what was cut.

    Args:
        code: the Python source to run
        files: files to write first, {relative path: text}
        timeout_seconds: the snippet is killed past it
    """
    out = sandboxed.exec_code(code, files, timeout_seconds)
    cut = set(out["truncated"])
    for stream in ("stdout", "stderr"):
        out[stream], clipped = _clip(out[stream], STREAM_CAP_BYTES)
        if clipped:
            cut.add(stream)
    budget = FILES_CAP_BYTES
    skipped = dict(out["files_skipped"])
    for kind in ("files", "binary_files"):
        kept: dict[str, str] = {}
        for name, content in sorted(out[kind].items()):
            size = len(content.encode())
            if size > budget:
                skipped[name] = (Path.cwd() / name).stat().st_size
                continue
            budget -= size
            kept[name] = content
        out[kind] = kept
    out["files_skipped"] = skipped
    out["truncated"] = sorted(cut)
    return out


def _clip(text: str, cap: int) -> tuple[str, bool]:
    """`text` cut to at most `cap` bytes of UTF-8 (never inside a character), and whether it was."""
    data = text.encode()
    if len(data) <= cap:
        return text, False
    return data[:cap].decode("utf-8", "ignore"), True


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
def read_skill_file(skill_name: str, file_name: str = "SKILL.md", offset: int = 0) -> dict[str, Any]:
    """Read a file of a skill's folder (SKILL.md, reference.md, examples.md, ...): `skill_name` as
    the catalog names it, `file_name` relative to the skill's folder; 64 KiB at most from byte
    `offset` (`next_offset` says where to go on)."""
    name = check_relative_path(skill_name, "skill name")
    if "/" in name:
        raise ValidationError(f"skill name {skill_name!r} is refused: it names a folder of its own")
    folder = Path.cwd() / SKILLS_DIR / name
    if not folder.is_dir():
        raise NotFound(f"skill {skill_name!r} is not one of this run's skills", skill=skill_name)
    return {"skill": name, **_read(folder, file_name, f"file of skill {name!r}", offset)}
