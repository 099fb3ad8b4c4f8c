"""The head's side of the read models' process (maze/projections/service.py): starting and
supervising it, and asking it queries over its Unix socket, with the same errors as if they had
run in process.

Nothing waits on it without a bound: a query that gets no answer within QUERY_TIMEOUT_S (a rebuild:
REBUILD_TIMEOUT_S) is a 503, at most MAX_CONNECTIONS queries are in flight, and a process that exits
is started again (with a backoff) while the head answers reads with 503 meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import structlog

from maze.core.errors import ERROR_TYPES, MazeError, Unavailable
from maze.projections.service import NATS_ENV, PARENT_ENV, frame, read_frame

log = structlog.get_logger(__name__)
IDLE_KEPT = 16
MAX_CONNECTIONS = 64
QUERY_TIMEOUT_S = 30.0  # above the service's own read barrier (10 s)
REBUILD_TIMEOUT_S = 3600.0
SOCKET_PATH_MAX = 100  # AF_UNIX paths are at most 107 bytes
START_TIMEOUT_S = 120.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_S = 60.0


def socket_path(data_dir: Path) -> tuple[Path, Path | None]:
    """In the data dir (only its owner can reach it); in a private temp dir (returned second, to
    remove at the end) when that path would be too long for a Unix socket."""
    path = data_dir / "readmodels.sock"
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path, None
    private = Path(tempfile.mkdtemp(prefix="maze-"))
    return private / "readmodels.sock", private


class ReadModels:
    """Asks the read models' process. One query per connection at a time; idle ones are kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def call(
        self, op: str, *args: Any, min_seq: int | None = None, timeout: float | None = None
    ) -> Any:
        limit = timeout or (REBUILD_TIMEOUT_S if op == "rebuild" else QUERY_TIMEOUT_S)
        try:
            async with self._slots:
                answer = await asyncio.wait_for(self._ask(op, list(args), min_seq), limit)
        except TimeoutError as exc:
            raise Unavailable(f"the read models' process did not answer {op} within {limit:g} s") from exc
        if "error" in answer:
            err = answer["error"]
            cls = ERROR_TYPES.get(err.get("type", ""), MazeError)
            raise cls(err.get("message", "read-model query failed"), **(err.get("details") or {}))
        return answer["ok"]

    async def _ask(self, op: str, args: list[Any], min_seq: int | None) -> Any:
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = await asyncio.open_unix_connection(str(self.path), limit=1 << 20)
            reader, writer = conn
            writer.write(frame({"op": op, "args": args, "min_seq": min_seq}))
            await writer.drain()
            answer = await read_frame(reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            if conn is not None:
                conn[1].close()
            raise Unavailable(f"the read models' process did not answer ({op}): {exc!r}") from exc
        except BaseException:  # cancelled or timed out mid-query: the connection's state is unknown
            if conn is not None:
                conn[1].close()
            raise
        if len(self._idle) < IDLE_KEPT:
            self._idle.append(conn)
        else:
            conn[1].close()
        return answer

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class ReadModelProcess:
    """`python -m maze.projections.service` as a child of the head: it dies with the head, and the
    head starts it again if it exits."""

    def __init__(self, data_dir: Path, urls: list[str], log_level: str) -> None:
        self.db = data_dir / "readmodels.duckdb"
        self.socket, self._private_dir = socket_path(data_dir)
        self.urls = urls
        self.log_level = log_level
        self.proc: asyncio.subprocess.Process | None = None
        self.models = ReadModels(self.socket)
        self.restarts = 0
        self._said: list[bytes] = []  # its last lines, for the error if it exits early
        self._relay: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> ReadModels:
        """Start it and wait until it answers. Raises Unavailable with its own last words if it
        exits first (the read models in use by another head, say)."""
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name="readmodels-supervisor")
        return self.models

    async def _spawn(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.models.close()
        self._said = []
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
            env={**os.environ, NATS_ENV: ",".join(self.urls), PARENT_ENV: str(os.getpid())},
            stderr=asyncio.subprocess.PIPE,
        )
        self._relay = asyncio.create_task(self._relay_stderr(self.proc), name="readmodels-log")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            if self.proc.returncode is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._relay, 5)
                raise Unavailable(self._last_words())
            if self.socket.exists():
                try:
                    await self.models.call("status", timeout=5)
                    return
                except Unavailable:
                    pass
            if loop.time() > deadline:
                await self._end_process()
                raise Unavailable(f"the read models' process did not start within {START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.05)

    async def _supervise(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            assert self.proc is not None
            began = loop.time()
            code = await self.proc.wait()
            if self._stopping:
                return
            if loop.time() - began > STABLE_S:
                failures = 0
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            failures += 1
            self.restarts += 1
            log.error("readmodels.exited_restarting", code=code, restarts=self.restarts, in_s=delay)
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except Exception as exc:  # tried again after the next backoff
                log.error("readmodels.restart_failed", error=str(exc))

    def _last_words(self) -> str:
        assert self.proc is not None
        lines = [line.decode(errors="replace").rstrip() for line in self._said]
        errors = [line for line in lines if line.startswith("error: ")]
        if errors:
            return errors[-1].removeprefix("error: ")
        tail = "\n".join(lines[-20:])
        return f"the read models' process exited with code {self.proc.returncode}: {tail}"

    async def _relay_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Its log lines go where the head's go."""
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self._said = [*self._said[-19:], line]
            sys.stderr.buffer.write(line)
            sys.stderr.flush()

    async def _end_process(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            log.warning("readmodels.kill_after_timeout")
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        self.models.close()
        await self._end_process()
        if self._relay is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._relay, 2)
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
