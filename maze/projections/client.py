"""The head's side of the read models' process (maze/projections/service.py): starting it, and
asking it queries over its Unix socket, with the same errors as if they had run in process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from maze.core.errors import ERROR_TYPES, MazeError, Unavailable
from maze.projections.service import NATS_ENV, frame, read_frame

log = structlog.get_logger(__name__)
IDLE_KEPT = 16
SOCKET_PATH_MAX = 100  # AF_UNIX paths are at most 107 bytes


def socket_path(data_dir: Path) -> Path:
    """In the data dir (only its owner can reach it); in a private temp dir when that path would
    be too long for a Unix socket."""
    path = data_dir / "readmodels.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="maze-")) / "readmodels.sock"


class ReadModels:
    """Asks the read models' process. One query per connection at a time; idle ones are kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self, op: str, *args: Any, min_seq: int | None = None) -> Any:
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = await asyncio.open_unix_connection(str(self.path), limit=1 << 20)
            reader, writer = conn
            writer.write(frame({"op": op, "args": list(args), "min_seq": min_seq}))
            await writer.drain()
            answer = await read_frame(reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            if conn is not None:
                conn[1].close()
            raise Unavailable(f"the read models' process did not answer ({op}): {exc!r}") from exc
        except BaseException:  # cancelled mid-query: the connection's state is unknown
            if conn is not None:
                conn[1].close()
            raise
        if len(self._idle) < IDLE_KEPT:
            self._idle.append(conn)
        else:
            conn[1].close()
        if "error" in answer:
            err = answer["error"]
            cls = ERROR_TYPES.get(err.get("type", ""), MazeError)
            raise cls(err.get("message", "read-model query failed"), **(err.get("details") or {}))
        return answer["ok"]

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class ReadModelProcess:
    """`python -m maze.projections.service` as a child of the head (it dies with it)."""

    def __init__(self, data_dir: Path, urls: list[str], log_level: str) -> None:
        self.db = data_dir / "readmodels.duckdb"
        self.socket = socket_path(data_dir)
        self.urls = urls
        self.log_level = log_level
        self.proc: asyncio.subprocess.Process | None = None
        self.models = ReadModels(self.socket)
        self._said: list[bytes] = []  # its last lines, for the error if it exits early
        self._relay: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 120.0) -> ReadModels:
        """Start it and wait until it answers. Raises Unavailable with its own last words if it
        exits first (the read models in use by another head, say)."""
        self.socket.unlink(missing_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "maze.projections.service",
            "--db",
            str(self.db),
            "--socket",
            str(self.socket),
            "--log-level",
            self.log_level,
            env={**os.environ, NATS_ENV: ",".join(self.urls)},
            stderr=asyncio.subprocess.PIPE,
        )
        self._relay = asyncio.create_task(self._relay_stderr(), name="readmodels-log")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                await asyncio.wait_for(self._relay, 5)
                raise Unavailable(self._last_words())
            if self.socket.exists():
                try:
                    await self.models.call("status")
                    return self.models
                except Unavailable:
                    pass
            if time.monotonic() > deadline:
                await self.stop()
                raise Unavailable(f"the read models' process did not start within {timeout:g} s")
            await asyncio.sleep(0.05)

    def _last_words(self) -> str:
        assert self.proc is not None
        lines = [line.decode(errors="replace").rstrip() for line in self._said]
        errors = [line for line in lines if line.startswith("error: ")]
        if errors:
            return errors[-1].removeprefix("error: ")
        tail = "\n".join(lines[-20:])
        return f"the read models' process exited with code {self.proc.returncode}: {tail}"

    async def _relay_stderr(self) -> None:
        """Its log lines go where the head's go."""
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self._said = [*self._said[-19:], line]
            sys.stderr.buffer.write(line)
            sys.stderr.flush()

    async def stop(self) -> None:
        self.models.close()
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            log.warning("readmodels.kill_after_timeout")
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self._relay is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._relay, 2)
