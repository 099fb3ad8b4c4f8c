"""Which of an attempt's files are its artifacts, when its task names them (`@task(artifacts=[...])`,
an app's `artifacts:` in maze.yaml): a list of patterns, each relative to the attempt's directory.

A pattern is a path whose segments may hold the shell's wildcards (`*`, `?`, `[...]`, never
crossing a `/`), and `**` as a whole segment for any number of directories (none included). A
pattern names the files it matches and everything under the directories it matches:
`outputs/` (or `outputs`) is every file under `outputs`, `*.csv` the CSV files at the top,
`**/*.log` every `.log` file anywhere, `models/*/best.pt` one file per model directory. A pattern
ending in `/` matches directories only. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

MAX_PATTERNS = 100
MAX_PATTERN_CHARS = 1024


def pattern_problem(pattern: object) -> str | None:
    """Why `pattern` cannot name files of an attempt directory, or None when it can."""
    if not isinstance(pattern, str):
        return f"must be a string, not {type(pattern).__name__}"
    if not pattern.strip():
        return "must not be empty"
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"is longer than {MAX_PATTERN_CHARS} characters"
    if "\x00" in pattern or "\\" in pattern:
        return "must not hold a NUL or a backslash"
    if pattern.startswith("/") or pattern.startswith("~"):
        return f"{pattern!r} must be relative to the attempt's directory"
    parts = pattern.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"{pattern!r} must not hold '..', '.' or empty segments"
    return None


def _match(pattern: Sequence[str], path: Sequence[str]) -> bool:
    """Whether the segments of `pattern` match all of `path`'s."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and _match(rest, path[1:])


def matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A test of a file's relative POSIX path against the patterns (checked with pattern_problem
    first: a bad one is refused there)."""
    compiled = [(p.rstrip("/").split("/"), p.endswith("/")) for p in patterns]

    def matches(path: str) -> bool:
        parts = path.split("/")
        for segments, dirs_only in compiled:
            # the file itself, or a directory above it
            last = len(parts) - 1 if dirs_only else len(parts)
            if any(_match(segments, parts[:k]) for k in range(1, last + 1)):
                return True
        return False

    return matches
