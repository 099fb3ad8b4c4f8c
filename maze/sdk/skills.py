"""Skills for ReAct agents: a folder with a standard `SKILL.md` (YAML front matter with `name` and
`description`, then instructions), and any other files (reference.md, examples.md, scripts).

`load_skill(path)` reads the folder; a ReAct workflow given skills carries each folder's files in
its run's workspace under `.skills/<name>/`, shows the decision task only a compact catalog (name
and description), and registers the `read_skill_file(skill_name, file_name)` tool that reads more.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from maze.core.errors import ValidationError
from maze.events.artifacts import check_path

SKILL_FILE = "SKILL.md"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
MAX_DESCRIPTION_CHARS = 1024
MAX_SKILL_FILES = 1000
MAX_SKILL_BYTES = 64 * 1024 * 1024
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Skill:
    """A skill folder as loaded: its name and description (from SKILL.md's front matter), its
    folder, and its files (paths relative to the folder)."""

    name: str
    description: str
    path: Path
    files: tuple[str, ...] = field(default=())


def load_skill(path: str | os.PathLike[str]) -> Skill:
    """Read a skill folder: its `SKILL.md` must open with YAML front matter naming the skill
    (`name`: letters, digits, `_`, `.`, `-`) and saying what it is for (`description`). Raises
    ValidationError saying what is wrong (no folder, no SKILL.md, no front matter, a missing field,
    a link leading out of the folder)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValidationError(f"skill folder {str(path)!r} is not a directory", path=str(path))
    manifest = folder / SKILL_FILE
    if not manifest.is_file():
        raise ValidationError(f"skill folder {str(path)!r} has no {SKILL_FILE}", path=str(path))
    text = manifest.read_text(encoding="utf-8", errors="replace")
    found = FRONT_MATTER.match(text)
    if found is None:
        raise ValidationError(
            f"{manifest}: {SKILL_FILE} must open with YAML front matter (---, name:, description:, ---)"
        )
    try:
        meta = msgspec.yaml.decode(found.group(1).encode())
    except msgspec.DecodeError as exc:
        raise ValidationError(f"{manifest}: its front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValidationError(f"{manifest}: its front matter must be a mapping with name and description")
    name, description = meta.get("name"), meta.get("description")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError(
            f"{manifest}: 'name' must be 1-64 letters, digits, '_', '.' or '-' (got {name!r})"
        )
    if not isinstance(description, str) or not description.strip():
        raise ValidationError(f"{manifest}: 'description' must be a non-empty string")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValidationError(f"{manifest}: 'description' holds {MAX_DESCRIPTION_CHARS} characters at most")
    root = folder.resolve()
    files: list[str] = []
    total = 0
    for parent, _dirs, names in os.walk(folder, followlinks=False):
        for file_name in sorted(names):
            file = Path(parent) / file_name
            if not file.is_file():
                continue
            if not file.resolve().is_relative_to(root):
                raise ValidationError(f"skill file {file} is a link that leads outside the skill's folder")
            rel = file.relative_to(folder).as_posix()
            check_path(rel, f"skill file {rel!r}")
            files.append(rel)
            total += file.stat().st_size
    if len(files) > MAX_SKILL_FILES or total > MAX_SKILL_BYTES:
        raise ValidationError(
            f"skill {name!r} holds {len(files)} files, {total} bytes: at most {MAX_SKILL_FILES} files, "
            f"{MAX_SKILL_BYTES} bytes"
        )
    return Skill(name=name, description=description.strip(), path=root, files=tuple(sorted(files)))
