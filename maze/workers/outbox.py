"""Coalesces a worker's events: everything emitted in one loop tick leaves as one message per run
(more when they exceed the message limit), all messages pipelined.

Every failed publish is classified (STYLE.md habit 18):
- transient (a reconnect, a leader election, a timeout): retried with the same message ids, backing
  off, until stored, so nothing emitted is lost while NATS recovers;
- too large for any message: the event is replaced by one that can fit (a success whose result does
  not fit becomes a `payload_too_large` failure);
- refused by the store for good (its limits or permissions): each result is replaced by a small
  `event_store_refused` failure, tried a few times; if the store still refuses, the batch is dropped
  with an error log and `on_unrecordable` is called (the worker then starts a new session, so the
  controller records its attempts lost and retries them elsewhere). Nothing is retried without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import repeat

import structlog
from nats.errors import MaxPayloadError

from maze.core import hops
from maze.core.errors import PayloadTooLarge
from maze.core.tasks import cancel_and_wait
from maze.events.catalog import Event, event_tag
from maze.events.fit import failed_instead, make_fit
from maze.events.store import EventStore, describe_error, is_transient
from maze.events.tasks import AttemptSucceeded

log = structlog.get_logger(__name__)


PERMANENT_TRIES = 4


class Outbox:
    def __init__(
        self, store: EventStore, on_unrecordable: Callable[[list[Event], BaseException], None] | None = None
    ) -> None:
        self.store = store
        self.on_unrecordable = on_unrecordable
        self.dropped = 0  # events the store refused for good
        self.pending: list[Event] = []
        self.inflight: list[Event] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # events whose emitter waits to know they were stored as they are (by id; the event is
        # kept, so its id is not reused meanwhile): True once stored, False when replaced or dropped
        self._watched: dict[int, tuple[Event, asyncio.Future[bool]]] = {}
        self._watching: list[tuple[Event, asyncio.Future[bool]]] = []  # those of the batch in flight

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="outbox")

    def emit(self, event: Event, stored: asyncio.Future[bool] | None = None) -> None:
        """`stored`, when given, is resolved True once the event is stored as it is, False if it is
        not (replaced by a failure that fits, or dropped)."""
        self.pending.append(event)
        if stored is not None:
            self._watched[id(event)] = (event, stored)
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Wait until everything emitted so far is stored."""
        await self._idle.wait()

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        # what a new outbox sends of them is not watched
        _tell([*self._watching, *self._watched.values()], set())
        self._watching, self._watched = [], {}

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
            self._watching = (
                [w for w in map(self._watched.pop, map(id, batch), repeat(None)) if w is not None]
                if self._watched
                else []
            )
            delay = 0.05
            refusals = 0
            if hops.enabled():
                for event in batch:
                    hops.mark(f"worker_publishing_{event_tag(event)}", getattr(event, "run_id", ""))
            while batch:
                try:
                    await self.store.publish_runs(batch)
                    if hops.enabled():
                        for event in batch:
                            hops.mark(f"worker_published_{event_tag(event)}", getattr(event, "run_id", ""))
                    if self._watching:
                        _tell(self._watching, {id(e) for e in batch})
                        self._watching = []
                    batch = self.inflight = []
                except asyncio.CancelledError:
                    raise
                except (PayloadTooLarge, MaxPayloadError):  # permanent: nothing of it was stored
                    batch = self.inflight = make_fit(batch, self.store.budget)
                except Exception as exc:
                    if is_transient(exc):
                        log.warning(
                            "outbox.store_unavailable_retrying", error=describe_error(exc), events=len(batch)
                        )
                    else:
                        refusals += 1
                        log.error(
                            "outbox.store_refused",
                            error=describe_error(exc),
                            events=len(batch),
                            tries=refusals,
                        )
                        if refusals >= PERMANENT_TRIES:
                            _tell(self._watching, set())
                            self._watching = []
                            self._give_up(batch, exc)
                            batch = self.inflight = []
                            break
                        batch = self.inflight = as_refused(batch, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            if not self.pending:
                self._idle.set()

    def _give_up(self, batch: list[Event], exc: BaseException) -> None:
        self.dropped += len(batch)
        log.error(
            "outbox.events_dropped", error=describe_error(exc), events=len(batch), dropped_total=self.dropped
        )
        if self.on_unrecordable is not None:
            self.on_unrecordable(batch, exc)


def _tell(watched: list[tuple[Event, asyncio.Future[bool]]], stored: set[int]) -> None:
    """Each watched event: stored as it is (its object in the batch stored), or not."""
    for event, future in watched:
        if not future.done():
            future.set_result(id(event) in stored)


def as_refused(events: list[Event], exc: BaseException) -> list[Event]:
    """The batch with each success replaced by a small failure saying the store refused it (its
    result may be what the store's limits refuse); other events as they are."""
    message = f"the event store refused this attempt's result: {describe_error(exc)}"[:2000]
    out: list[Event] = []
    for event in events:
        if isinstance(event, AttemptSucceeded):
            out.append(failed_instead(event, "event_store_refused", message, retryable=True))
        else:
            out.append(event)
    return out
