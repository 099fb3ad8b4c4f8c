"""`client.exec_code(code, files=None, timeout_seconds=30)`: a snippet of Python run in a sandbox
(README, "Sandboxed execution"), the role of the original Maze's code sandbox service.

The task writes `files` into its attempt directory, runs `python -` with the code on stdin in that
directory (inside the same sandbox: no network, its memory and process limits), and returns what
it printed, its exit code, and the files it made or changed there. What comes back is capped:
each stream at OUTPUT_CAP_BYTES (the rest cut, said in `truncated`), each file at FILE_CAP_BYTES
and all files together at FILES_CAP_BYTES (files past a cap are named in `files_skipped` with
their sizes, not returned)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from maze.sdk.task import task

OUTPUT_CAP_BYTES = 1024 * 1024
FILE_CAP_BYTES = 4 * 1024 * 1024
FILES_CAP_BYTES = 16 * 1024 * 1024
TIMED_OUT_EXIT = -9  # the exit code of a snippet killed at its timeout
DEFAULT_CPU_MEM_MB = 1024  # the sandbox's memory unless the caller gives another (client.exec_code)
READ_BYTES = 1024 * 1024


def checked_name(name: object) -> str:
    """A file name given to exec_code: relative, inside the attempt directory, each part a name
    (no `..`, no `.`, no empty part: not a directory)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"a file name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    if name.startswith(("/", "~")) or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"file name {name!r} must be a relative path inside the sandbox naming a file, without "
            "'..', '.' or empty parts"
        )
    return name


def checked_names(names: list[str]) -> None:
    """Every name checked, and none the directory of another (it could not be both)."""
    for name in names:
        checked_name(name)
    given = set(names)
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in given:
                raise ValueError(f"file name {'/'.join(parts[:i])!r} is also the directory of {name!r}")


def _digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def _fingerprints(root: Path) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = _digest(path)
    return out


def _capped(stream: IO[bytes]) -> tuple[str, bool]:
    """At most OUTPUT_CAP_BYTES of what a stream's file holds (it is not read further)."""
    stream.seek(0)
    data = stream.read(OUTPUT_CAP_BYTES + 1)
    return data[:OUTPUT_CAP_BYTES].decode("utf-8", "replace"), len(data) > OUTPUT_CAP_BYTES


@task(sandbox=True)
def exec_code(
    code: str = "", files: dict[str, Any] | None = None, timeout_seconds: float = 30.0
) -> dict[str, Any]:
    root = Path.cwd()
    for name, content in (files or {}).items():
        target = root / checked_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else bytes(content))
    before = _fingerprints(root)
    # the streams go to files in the sandbox's private /tmp (its memory limit holds them), never
    # into this process's memory whole; only their first OUTPUT_CAP_BYTES are read back
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(
                [sys.executable, "-"],
                input=code.encode(),
                stdout=out,
                stderr=err,
                timeout=timeout_seconds,
                cwd=root,
            )
            exit_code, timed_out = done.returncode, False
        except subprocess.TimeoutExpired:
            exit_code, timed_out = TIMED_OUT_EXIT, True
        stdout, out_cut = _capped(out)
        stderr, err_cut = _capped(err)
    if timed_out:
        stderr += f"\n[maze] the code was killed after its timeout of {timeout_seconds:g}s\n"
    produced: dict[str, str] = {}
    binary: dict[str, str] = {}  # base64: a result travels as JSON to the client, which decodes it
    skipped: dict[str, int] = {}
    total = 0
    for name, digest in sorted(_fingerprints(root).items()):
        if before.get(name) == digest:
            continue
        size = (root / name).stat().st_size  # read whole only within the caps
        if size > FILE_CAP_BYTES or total + size > FILES_CAP_BYTES:
            skipped[name] = size
            continue
        total += size
        data = (root / name).read_bytes()
        try:
            produced[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            binary[name] = base64.b64encode(data).decode()
    return {
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": exit_code,
        "timed_out": timed_out,
        "files": produced,
        "binary_files": binary,
        "files_skipped": skipped,
        "truncated": [name for name, cut in (("stdout", out_cut), ("stderr", err_cut)) if cut],
    }
