"""Ships what tasks print to the `MAZE_LOGS` stream in batches, never a message per line.

Lines wait in a buffer per subject (one run's task on this node) and leave as one message when
LOG_FLUSH_BYTES have gathered or LOG_FLUSH_S after the first, whichever comes first, each message
within LOG_BATCH_BYTES and the server's `max_payload`. A subject has one message in flight at a
time, so its lines are stored in the order they were printed even when a publish is retried; what
arrives meanwhile goes in the next message, so a task printing fast makes big messages, not many.
Subjects do not wait for each other (their publishes are in flight together).

Nothing here is on a task's path except `flush`, which an attempt's end awaits for at most a bound
(maze/workers/worker.py) so that its lines are stored before its result is recorded. What a crash
of the worker loses: the lines in this buffer (up to LOG_FLUSH_S of output, more while the store
does not answer) and what its task processes' pipes held.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

import structlog
from nats.js import JetStreamContext

from maze.events import headers, subjects
from maze.events.logs import CURSOR_SPAN, LogLine, encode_batch
from maze.events.store import describe_error, is_transient

log = structlog.get_logger(__name__)

LOG_FLUSH_S = 0.1
LOG_FLUSH_BYTES = 64 * 1024
LOG_BATCH_BYTES = 256 * 1024
LOG_BATCH_LINES = min(20_000, CURSOR_SPAN - 1)
# All lines waiting in this worker: past it (the store has not answered for a while), new lines are
# dropped and counted, and the attempt's marker line says how many bytes (maze/workers/capture.py).
LOG_BUFFER_BYTES = 64 * 1024 * 1024
# A batch the store has not taken after this long (retried through reconnects and elections) is
# dropped with a warning: lines must not hold the worker's memory for ever.
LOG_PUBLISH_GIVE_UP_S = 30.0


@dataclass(eq=False)
class _Subject:
    lines: list[tuple[LogLine, int]] = field(default_factory=list)  # (line, its size)
    size: int = 0
    queued: int = 0  # lines ever queued here
    done: int = 0  # of which stored, or given up on
    urgent: int = 0  # flushes waiting: send what is there without waiting for more
    sender: asyncio.Task[None] | None = None
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)


class LogShipper:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.js: JetStreamContext | None = None
        self.batch_bytes = LOG_BATCH_BYTES
        self.pending: dict[str, _Subject] = {}
        self.buffered = 0  # bytes of every line waiting
        self.published = 0  # messages stored
        self.dropped_batches = 0
        # whether the store took the last batch: while it does not (a head without the logs
        # stream, a store that is down), an attempt's end does not wait for its lines
        self.storing = True
        # message ids: unique to this shipper, so that a retried publish is stored once and a
        # restarted worker's batches are never taken for an earlier process's (within the
        # server's duplicate window)
        self._id_prefix = f"log/{uuid.uuid4().hex[:16]}"
        self._count = 0
        self._tick: asyncio.TimerHandle | None = None

    def bind(self, js: JetStreamContext, budget: int) -> None:
        """Publish through `js` (a worker's new connection after a rejoin); lines waiting stay."""
        self.js = js
        self.batch_bytes = max(4096, min(LOG_BATCH_BYTES, budget))

    def add(self, run_id: str, task_id: str, line: LogLine, size: int, force: bool = False) -> bool:
        """Queue a line; False when it was dropped because the buffer is full (`force`: a marker,
        queued all the same)."""
        if self.buffered + size > LOG_BUFFER_BYTES and not force:
            return False
        subject = subjects.log_subject(run_id, self.node_id, task_id)
        state = self.pending.get(subject)
        if state is None:
            state = self.pending[subject] = _Subject()
        state.lines.append((line, size))
        state.size += size
        state.queued += 1
        self.buffered += size
        if state.size >= LOG_FLUSH_BYTES:
            self._start(subject, state)
        elif self._tick is None:
            self._tick = asyncio.get_running_loop().call_later(LOG_FLUSH_S, self._on_tick)
        return True

    async def flush(self, run_id: str, task_id: str, timeout: float) -> bool:
        """Wait until every line queued so far for this task is stored (or given up on), for at
        most `timeout` seconds; whether they were."""
        subject = subjects.log_subject(run_id, self.node_id, task_id)
        state = self.pending.get(subject)
        if state is None or state.done >= state.queued:
            return True
        if not self.storing:
            self._start(subject, state)
            return False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append((state.queued, done))
        state.urgent += 1
        self._start(subject, state)
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            state.urgent -= 1
            state.waiters = [w for w in state.waiters if w[1] is not done]
            self._forget_if_idle(subject, state)

    async def close(self, timeout: float) -> None:
        """Send what waits (for at most `timeout` seconds), then stop."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        waits = []
        for subject, state in list(self.pending.items()):
            if state.lines or state.sender is not None:
                state.urgent += 1
                self._start(subject, state)
            if state.sender is not None:
                waits.append(state.sender)
        if waits:
            _, slow = await asyncio.wait(waits, timeout=timeout)
            for task in slow:
                task.cancel()
            if slow:
                log.warning("logs.unsent_at_stop", subjects=len(slow))

    # ---- sending ------------------------------------------------------------------------------
    def _on_tick(self) -> None:
        self._tick = None
        for subject, state in list(self.pending.items()):
            if state.lines:
                self._start(subject, state)

    def _start(self, subject: str, state: _Subject) -> None:
        if state.sender is None and state.lines:
            state.sender = asyncio.get_running_loop().create_task(self._send(subject, state))

    async def _send(self, subject: str, state: _Subject) -> None:
        try:
            while state.lines:
                taken = self._take(state)
                data = encode_batch([line for line, _ in taken])
                await self._publish(subject, data)
                size = sum(s for _, s in taken)
                self.buffered -= size
                state.done += len(taken)
                for target, waiter in state.waiters:
                    if state.done >= target and not waiter.done():
                        waiter.set_result(None)
                # more than a batch's worth came meanwhile, or someone waits for it: at once;
                # else the next tick takes what gathers (no message per line)
                if not (state.urgent or state.size >= LOG_FLUSH_BYTES):
                    break
        finally:
            state.sender = None
            if state.lines and self._tick is None:
                self._tick = asyncio.get_running_loop().call_later(LOG_FLUSH_S, self._on_tick)
            self._forget_if_idle(subject, state)

    def _take(self, state: _Subject) -> list[tuple[LogLine, int]]:
        budget = self.batch_bytes - 64
        total = 0
        n = 0
        for _, size in state.lines:
            if n and (total + size > budget or n >= LOG_BATCH_LINES):
                break
            total += size
            n += 1
        taken = state.lines[:n]
        del state.lines[:n]
        state.size -= total
        return taken

    async def _publish(self, subject: str, data: bytes) -> None:
        self._count += 1
        hdrs = {headers.MSG_ID: f"{self._id_prefix}/{self._count}"}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + LOG_PUBLISH_GIVE_UP_S
        delay = 0.1
        while True:
            js = self.js
            try:
                if js is None:
                    raise ConnectionError("not connected yet")
                await js.publish(subject, data, headers=hdrs)
                self.published += 1
                self.storing = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.storing = False
                if (
                    not (is_transient(exc) or isinstance(exc, ConnectionError))
                    or loop.time() + delay > give_up
                ):
                    # a permanent refusal, or a store gone too long: these lines are lost, said once
                    self.dropped_batches += 1
                    log.warning(
                        "logs.batch_dropped", subject=subject, bytes=len(data), error=describe_error(exc)
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _forget_if_idle(self, subject: str, state: _Subject) -> None:
        if not state.lines and state.sender is None and not state.waiters and not state.urgent:
            with contextlib.suppress(KeyError):
                if self.pending[subject] is state:
                    del self.pending[subject]
