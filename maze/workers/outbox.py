"""Coalesces a worker's events: everything emitted in one loop tick leaves as one message per run,
all messages pipelined. A failed publish is retried (same message id) until it is stored, so
nothing emitted is lost while NATS reconnects."""

from __future__ import annotations

import asyncio

import structlog

from maze.events.catalog import Event
from maze.events.store import EventStore

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
                except Exception as exc:
                    log.warning("outbox.publish_failed_retrying", error=str(exc), events=len(batch))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            if not self.pending:
                self._idle.set()
