"""The worker's side of task logs: every attempt runs with its output captured
(maze/workers/capture.py), and its lines are shipped to the log stream (maze/workers/log_shipper.py)
and stored before its outcome is recorded, waiting for that at most LOG_FLUSH_BEFORE_RESULT_S: a
follower of a run's logs has them all once the run has ended, and a result never waits long on the
log store (an attempt that printed nothing does not wait at all)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from nats.js import JetStreamContext

from maze.events.work import WorkItem
from maze.workers.capture import AttemptCapture, ProcessOutput
from maze.workers.log_shipper import LogShipper
from maze.workers.pool import ProcessPool, TaskProcess

log = structlog.get_logger(__name__)

LOG_FLUSH_BEFORE_RESULT_S = 1.0
LOG_FLUSH_AT_STOP_S = 5.0


STRAY_LOG_EVERY_S = 10.0


class StrayOutput:
    """What a task process writes while no attempt of it runs (a thread a task left printing): the
    worker's own, never a task's line. Logged at most once every STRAY_LOG_EVERY_S per process,
    with how many bytes came since the last such line and a sample (a thread printing without
    end costs the shared event loop one log line in ten seconds, not one per read)."""

    def __init__(self, logger: Any, pid: int) -> None:
        self.log = logger
        self.pid = pid
        self.bytes = 0
        self.logged_at: float | None = None

    def __call__(self, stream: str, data: bytes) -> None:
        self.bytes += len(data)
        now = time.monotonic()
        if self.logged_at is not None and now - self.logged_at < STRAY_LOG_EVERY_S:
            return
        self.logged_at = now
        sample = data[:2000].decode("utf-8", "replace")
        self.log.warning(
            "worker.task_process_output", pid=self.pid, stream=stream, bytes=self.bytes, sample=sample
        )
        self.bytes = 0


class TaskLogs:
    def __init__(self, node_id: str) -> None:
        self.shipper = LogShipper(node_id)
        self.outputs: set[ProcessOutput] = set()  # open: their pipes may still bring lines
        self.log = log.bind(node_id=node_id)

    def bind(self, js: JetStreamContext, budget: int) -> None:
        self.shipper.bind(js, budget)

    async def run(
        self, pool: ProcessPool, tp: TaskProcess, request: dict[str, Any], item: WorkItem, cap_bytes: int
    ) -> dict[str, Any]:
        """`pool.run` of the attempt, its output captured."""
        out: ProcessOutput | None = tp.output
        if out is None or out.closed:
            try:
                out = self._output(tp)
            except OSError as exc:  # out of file descriptors: the attempt runs, its output uncaptured
                log.warning(
                    "worker.output_not_captured", run_id=item.run_id, task_id=item.task_id, error=str(exc)
                )
                return await pool.run(tp, request, item.timeout_seconds)
        capture = AttemptCapture(self.shipper, item.run_id, item.task_id, item.attempt, cap_bytes)
        out.begin(capture)
        try:
            reply = await pool.run(tp, request, item.timeout_seconds, output_fds=out.take_fds())
        except BaseException as exc:
            # killed or dead: what its processes wrote until they are all gone is this attempt's
            out.end(linger=True)
            if not isinstance(exc, asyncio.CancelledError):  # a timeout, a process that died
                await self.shipper.flush(item.run_id, item.task_id, LOG_FLUSH_BEFORE_RESULT_S)
            raise
        # a sandbox's process serves this attempt only, and is killed whole after it
        out.end(linger=pool.single_use)
        await self.shipper.flush(item.run_id, item.task_id, LOG_FLUSH_BEFORE_RESULT_S)
        return reply

    def _output(self, tp: TaskProcess) -> ProcessOutput:
        out = tp.output = ProcessOutput(StrayOutput(self.log, tp.pid))
        self.outputs.add(out)
        out.on_close = self.outputs.discard
        return out

    async def close(self) -> None:
        """The worker stops: the task processes' pipes close, and what they read is sent (for a
        bounded time)."""
        for out in list(self.outputs):
            out.close()
        await self.shipper.close(LOG_FLUSH_AT_STOP_S)
