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
from pathlib import Path, PurePosixPath
from typing import Any

from maze.sdk.task import task

OUTPUT_CAP_BYTES = 1024 * 1024
FILE_CAP_BYTES = 4 * 1024 * 1024
FILES_CAP_BYTES = 16 * 1024 * 1024
TIMED_OUT_EXIT = -9  # the exit code of a snippet killed at its timeout


def checked_name(name: object) -> str:
    """A file name given to exec_code: relative, inside the attempt directory, no `..`."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"a file name must be a non-empty string, got {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith("~"):
        raise ValueError(f"file name {name!r} must be a relative path inside the sandbox, without '..'")
    return str(path)


def _fingerprints(root: Path) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _capped(data: bytes | None) -> tuple[str, bool]:
    data = data or b""
    cut = len(data) > OUTPUT_CAP_BYTES
    return data[:OUTPUT_CAP_BYTES].decode("utf-8", "replace"), cut


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
    try:
        done = subprocess.run(
            [sys.executable, "-"], input=code.encode(), capture_output=True, timeout=timeout_seconds, cwd=root
        )
        exit_code, out, err, timed_out = done.returncode, done.stdout, done.stderr, False
    except subprocess.TimeoutExpired as exc:
        exit_code, timed_out = TIMED_OUT_EXIT, True
        out = exc.stdout if isinstance(exc.stdout, bytes) else b""
        err = exc.stderr if isinstance(exc.stderr, bytes) else b""
        err += f"\n[maze] the code was killed after its timeout of {timeout_seconds:g}s\n".encode()
    stdout, out_cut = _capped(out)
    stderr, err_cut = _capped(err)
    produced: dict[str, str] = {}
    binary: dict[str, str] = {}  # base64: a result travels as JSON to the client, which decodes it
    skipped: dict[str, int] = {}
    total = 0
    for name, digest in sorted(_fingerprints(root).items()):
        if before.get(name) == digest:
            continue
        size = (root / name).stat().st_size
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
