"""The rules a file path named by a user must follow (workspace files; anything else that takes a
path relative to a root: artifacts, app runs), in one place and free of I/O but `resolve_inside`.

A path is relative and POSIX-shaped, exactly as it is stored: segments joined by `/`, none of them
empty, `.` or `..`; no backslash (a Windows separator that would mean something else elsewhere), no
control character (NUL included); at most MAX_SEGMENT_CHARS characters a segment, MAX_DEPTH segments
and MAX_PATH_CHARS characters in all. Nothing is rewritten (`a//b`, `./a`, `a/` are refused, not
tidied): what is accepted is the one spelling of that file, and PATH_PATTERN, which the API's
document shows, accepts exactly the same paths.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from maze.core.errors import ValidationError

MAX_PATH_CHARS = 1024
MAX_SEGMENT_CHARS = 255
MAX_DEPTH = 32

_CONTROL = r"\x00-\x1f\x7f-\x9f"  # Unicode category Cc: C0, DEL and C1
_CHAR = rf"[^/\\{_CONTROL}]"
_FIRST = rf"[^./\\{_CONTROL}]"
# a segment that is not "." or "..": it starts with another character than a dot, or is a dot and
# another character, or two dots and at least one more
SEGMENT_PATTERN = (
    rf"(?:{_FIRST}{_CHAR}{{0,{MAX_SEGMENT_CHARS - 1}}}"
    rf"|\.{_FIRST}{_CHAR}{{0,{MAX_SEGMENT_CHARS - 2}}}"
    rf"|\.\.{_CHAR}{{1,{MAX_SEGMENT_CHARS - 2}}})"
)
PATH_PATTERN = rf"^{SEGMENT_PATTERN}(?:/{SEGMENT_PATTERN}){{0,{MAX_DEPTH - 1}}}$"
# a listing's prefix: whole segments, each followed by `/`, then the beginning of one (any text)
PREFIX_PATTERN = rf"^(?:{SEGMENT_PATTERN}/){{0,{MAX_DEPTH - 1}}}{_CHAR}{{0,{MAX_SEGMENT_CHARS}}}$"

WORKSPACE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

_PATH_RE = re.compile(PATH_PATTERN)
_PREFIX_RE = re.compile(PREFIX_PATTERN)
_NAME_RE = re.compile(WORKSPACE_NAME_PATTERN)
_CONTROL_RE = re.compile(rf"[{_CONTROL}]")


def check_relative_path(path: str | PurePath, what: str = "path") -> str:
    """`path` as stored (POSIX form: a PurePath is taken as its `as_posix()`), or ValidationError
    saying which rule it breaks."""
    if isinstance(path, PurePath):
        if path.anchor:  # `/x`, `C:\x`, `C:x`: not relative, wherever it was made
            raise ValidationError(
                f"{what} {str(path)[:200]!r} is refused: it is absolute", path=str(path)[:200]
            )
        text = path.as_posix()
    else:
        text = path
    if not isinstance(text, str):
        raise ValidationError(f"{what} must be a string, not {type(text).__name__}")
    if len(text) <= MAX_PATH_CHARS and _PATH_RE.fullmatch(text):
        return text
    raise ValidationError(f"{what} {text[:200]!r} is refused: {why_refused(text)}", path=text[:200])


def why_refused(text: str) -> str:
    """Which rule `text` breaks (the first found), in words."""
    if not text:
        return "it is empty"
    if len(text) > MAX_PATH_CHARS:
        return f"it is longer than {MAX_PATH_CHARS} characters"
    if _CONTROL_RE.search(text):
        return "it holds a control character (NUL, newline, ...)"
    if "\\" in text:
        return "it holds a backslash (use / between directories)"
    if text.startswith("/"):
        return "it is absolute (it must be relative, without a leading /)"
    segments = text.split("/")
    if any(s == ".." for s in segments):
        return "it goes up a directory (..)"
    if any(s == "." for s in segments):
        return "it names the current directory (.)"
    if any(not s for s in segments):
        return "it has an empty segment (// or a trailing /)"
    if any(len(s) > MAX_SEGMENT_CHARS for s in segments):
        return f"a segment is longer than {MAX_SEGMENT_CHARS} characters"
    if len(segments) > MAX_DEPTH:
        return f"it is deeper than {MAX_DEPTH} segments"
    return "it does not fit the path rules"


def check_prefix(prefix: str) -> str:
    """A listing's prefix: whole valid segments, each followed by `/`, then any beginning of one."""
    if len(prefix) <= MAX_PATH_CHARS and _PREFIX_RE.fullmatch(prefix):
        return prefix
    raise ValidationError(
        f"prefix {prefix[:200]!r} is refused: {why_refused(prefix + 'x')}", prefix=prefix[:200]
    )


def check_workspace_name(name: str, what: str = "workspace name") -> str:
    """A workspace's (or a saved workflow's) name, or ValidationError."""
    if isinstance(name, str) and _NAME_RE.fullmatch(name):
        return name
    raise ValidationError(
        f"{what} {str(name)[:100]!r} is refused: 1 to 64 letters, digits, '_' or '-', starting "
        "with a letter or digit",
        name=str(name)[:100],
    )


def resolve_inside(root: Path, path: str | PurePath) -> Path:
    """`root / path` for a path that passes `check_relative_path`, resolved (symlinks followed),
    refused when it lands outside `root`: a symlink on the way must not lead elsewhere."""
    relative = check_relative_path(path)
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise ValidationError(
            f"path {relative!r} leads outside {str(root)!r} (through a symbolic link) and is refused",
            path=relative,
        )
    return target
