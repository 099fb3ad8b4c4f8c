"""The worker's side of task logs: every attempt runs with its output captured
(maze/workers/capture.py), and its lines are shipped to the log stream (maze/workers/log_shipper.py)
and stored before its outcome is recorded, waiting for that at most LOG_FLUSH_BEFORE_RESULT_S: a
follower of a run's logs has them all once the run has ended, and a result never waits long on the
log store (an attempt that printed nothing does not wait at all)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from nats.js import JetStreamContext

from maze.events.work import WorkItem
from maze.workers.capture import AttemptCapture
from maze.workers.log_shipper import LogShipper
from maze.workers.pool import ProcessPool, TaskProcess

log = structlog.get_logger(__name__)

LOG_FLUSH_BEFORE_RESULT_S = 1.0
LOG_FLUSH_AT_STOP_S = 5.0


class TaskLogs:
    def __init__(self, node_id: str) -> None:
        self.shipper = LogShipper(node_id)
        self.captures: set[AttemptCapture] = set()  # open: their pipes may still bring lines

    def bind(self, js: JetStreamContext, budget: int) -> None:
        self.shipper.bind(js, budget)

    async def run(
        self, pool: ProcessPool, tp: TaskProcess, request: dict[str, Any], item: WorkItem, cap_bytes: int
    ) -> dict[str, Any]:
        """`pool.run` of the attempt, its output captured."""
        try:
            capture = AttemptCapture(
                self.shipper,
                item.run_id,
                item.task_id,
                item.attempt,
                cap_bytes,
                on_closed=self.captures.discard,
            )
        except OSError as exc:  # out of file descriptors: the attempt runs, its output uncaptured
            log.warning(
                "worker.output_not_captured", run_id=item.run_id, task_id=item.task_id, error=str(exc)
            )
            return await pool.run(tp, request, item.timeout_seconds)
        self.captures.add(capture)
        try:
            reply = await pool.run(tp, request, item.timeout_seconds, output_fds=capture.fds)
        except BaseException as exc:
            capture.ended()
            if not isinstance(exc, asyncio.CancelledError):  # a timeout, a process that died
                await self.shipper.flush(item.run_id, item.task_id, LOG_FLUSH_BEFORE_RESULT_S)
            raise
        capture.ended()
        await self.shipper.flush(item.run_id, item.task_id, LOG_FLUSH_BEFORE_RESULT_S)
        return reply

    async def close(self) -> None:
        """The worker stops: its captures end, and what they read is sent (for a bounded time)."""
        for capture in list(self.captures):
            capture.close()
        await self.shipper.close(LOG_FLUSH_AT_STOP_S)
