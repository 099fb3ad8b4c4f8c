"""Coalesces a worker's events: everything emitted in one loop tick leaves as one message per run
(more when they exceed the message limit), all messages pipelined. A failed publish is retried (same
message id) until it is stored, so nothing emitted is lost while NATS reconnects. An event too large
for any message can never be stored: it is replaced by one that can (a success whose result does not
fit becomes a `payload_too_large` failure), never retried without end."""

from __future__ import annotations

import asyncio

import msgspec
import structlog

from maze.core.errors import PayloadTooLarge
from maze.events.catalog import Event
from maze.events.specs import TaskError
from maze.events.store import EventStore
from maze.events.tasks import AttemptFailed, AttemptSucceeded

_encoder = msgspec.msgpack.Encoder()

log = structlog.get_logger(__name__)


class Outbox:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.pending: list[Event] = []
        self.inflight: list[Event] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="outbox")

    def emit(self, event: Event) -> None:
        self.pending.append(event)
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Wait until everything emitted so far is stored."""
        await self._idle.wait()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def unsent(self) -> list[Event]:
        """After stop(): what was emitted but not confirmed stored (to hand to a new outbox)."""
        return [*self.inflight, *self.pending]

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let the rest of this tick's events join the batch
            batch, self.pending = self.pending, []
            self.inflight = batch
            delay = 0.05
            while batch:
                try:
                    await self.store.publish_runs(batch)
                    batch = self.inflight = []
                except asyncio.CancelledError:
                    raise
                except PayloadTooLarge:  # permanent: nothing of the batch was sent yet
                    batch = self.inflight = make_fit(batch, self.store.budget)
                except Exception as exc:
                    log.warning("outbox.publish_failed_retrying", error=str(exc), events=len(batch))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            if not self.pending:
                self._idle.set()


def make_fit(events: list[Event], budget: int) -> list[Event]:
    """The batch with every event that cannot fit one message replaced by one that can."""
    out: list[Event] = []
    for event in events:
        size = len(_encoder.encode(event))
        if size <= budget - 1024:
            out.append(event)
        elif isinstance(event, AttemptSucceeded):
            log.error("outbox.result_too_large", run_id=event.run_id, task_id=event.task_id, size=size)
            out.append(
                AttemptFailed(
                    run_id=event.run_id,
                    task_id=event.task_id,
                    attempt=event.attempt,
                    at_ms=event.at_ms,
                    node_id=event.node_id,
                    error=TaskError(
                        error_type="payload_too_large",
                        message=f"the result event is {size} bytes, above the message limit of {budget} bytes",
                        origin="worker",
                        node_id=event.node_id,
                        attempt=event.attempt,
                    ),
                )
            )
        elif isinstance(event, AttemptFailed):
            error = event.error
            clipped = msgspec.structs.replace(
                error, message=error.message[:4000], traceback=(error.traceback or "")[-8000:] or None
            )
            out.append(msgspec.structs.replace(event, error=clipped))
        else:
            log.error("outbox.event_dropped_too_large", event=type(event).__name__, size=size, limit=budget)
    return out
