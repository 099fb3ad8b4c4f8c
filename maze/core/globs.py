"""Which of an attempt's files are its artifacts, when its task names them (`@task(artifacts=[...])`,
an app's `artifacts:` in maze.yaml): a list of patterns, each relative to the attempt's directory.

A pattern is a path whose segments may hold the shell's wildcards (`*`, `?`, `[...]`, never
crossing a `/`), and `**` as a whole segment for any number of directories (none included). A
pattern names the files it matches and everything under the directories it matches:
`outputs/` (or `outputs`) is every file under `outputs`, `*.csv` the CSV files at the top,
`**/*.log` every `.log` file anywhere, `models/*/best.pt` one file per model directory. A pattern
ending in `/` matches directories only. Pure, no I/O.

A path is matched in one pass over its segments, keeping the set of pattern positions reached
(no backtracking), so a pattern costs O(its segments * the path's depth) however many `**` it
holds; validation caps a pattern at MAX_PATTERN_CHARS and MAX_PATTERN_SEGMENTS, a task at
MAX_PATTERNS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

MAX_PATTERNS = 100
MAX_PATTERN_CHARS = 1024
MAX_PATTERN_SEGMENTS = 64  # a file's path is matched in O(segments * its depth) per pattern


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
    if len(parts) > MAX_PATTERN_SEGMENTS:
        return f"has more than {MAX_PATTERN_SEGMENTS} segments"
    return None


def compile_pattern(pattern: str) -> tuple[tuple[str, ...], bool]:
    """(its segments, consecutive `**` as one, whether it matches directories only)."""
    segments: list[str] = []
    for part in pattern.rstrip("/").split("/"):
        if not (part == "**" and segments and segments[-1] == "**"):  # `**/**` is `**`
            segments.append(part)
    return tuple(segments), pattern.endswith("/")


def _closure(pattern: Sequence[str], states: set[int]) -> set[int]:
    """`states` with the positions a `**` may skip to (it matches no directory too)."""
    out = set(states)
    for j in sorted(states):
        while j < len(pattern) and pattern[j] == "**":
            j += 1
            out.add(j)
    return out


def matching_prefixes(pattern: Sequence[str], path: Sequence[str]) -> list[bool]:
    """For each k in 0..len(path), whether `pattern` matches all of `path[:k]`: one pass over the
    path with the set of pattern positions reached so far (an NFA, no backtracking), so it costs
    O(len(pattern) * len(path)) whatever number of `**` the pattern holds."""
    states = _closure(pattern, {0})
    done = len(pattern)
    out = [done in states]
    for k, segment in enumerate(path):
        nxt: set[int] = set()
        for j in states:
            if j == done:
                continue
            if pattern[j] == "**":
                nxt.add(j)  # it takes this directory too
            elif fnmatchcase(segment, pattern[j]):
                nxt.add(j + 1)
        states = _closure(pattern, nxt)
        out.append(done in states)
        if not states:
            out.extend([False] * (len(path) - k - 1))
            break
    return out


def matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A test of a file's relative POSIX path against the patterns (checked with pattern_problem
    first: a bad one is refused there)."""
    compiled = [compile_pattern(p) for p in patterns]

    def matches(path: str) -> bool:
        parts = path.split("/")
        for segments, dirs_only in compiled:
            # the file itself, or a directory above it
            last = len(parts) - 1 if dirs_only else len(parts)
            if any(matching_prefixes(segments, parts)[1 : last + 1]):
                return True
        return False

    return matches
