"""Live run feeds: the run-stream messages the controller already consumes, fanned out in process to
the API's SSE streams, so that following a run costs no JetStream consumer and no second decode.

The controller hands every runs-stream message it folds to `RunFeeds.note`, in stream order. A run
whose first message (`run.created`) this process saw has a *complete* feed: every message of the run
since, with its sequence, kept until shortly after the run ends. A stream opened on such a run is
served from memory (its backlog, then live). Any other run (created before this head started, a
feed dropped for its size or age) is read from the log as before (maze/api/event_reader.py): the
feed is a cache of the log, never a second record.

Bounds: a reader more than LISTENER_MAX messages behind goes on from the log (a slow client holds
no memory of the head's); a feed is dropped (readers fall back to the log) when its messages pass
FEED_MAX_BYTES; all
feeds together stay within TOTAL_MAX_BYTES (ended and unfollowed feeds are dropped first); an ended
run's feed is kept ENDED_KEPT_S and at most ENDED_KEPT of them; at most MAX_FEEDS in all.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from maze.events import subjects
from maze.events.codec import Decoded, shown_events
from maze.events.runs import RunCreated, RunFinished
from maze.head.run_changes import ChangeWatcher

FEED_MAX_BYTES = 8 * 1024 * 1024
TOTAL_MAX_BYTES = 256 * 1024 * 1024  # all feeds' messages together (ended and unfollowed go first)
ENDED_KEPT_S = 60.0
ENDED_KEPT = 2_000
MAX_FEEDS = 200_000
LISTENER_MAX = 10_000  # entries waiting for one reader; past that it goes on from the log
_json = msgspec.json.Encoder()


class Entry:
    __slots__ = ("_data", "decoded", "finished", "seq")

    def __init__(self, seq: int, decoded: Decoded, finished: bool) -> None:
        self.seq = seq
        self.decoded = decoded
        self.finished = finished
        self._data: str | None = None

    def data(self) -> str:
        """The message's events as the SSE `data` (JSON), made once for every reader."""
        if self._data is None:
            self._data = _json.encode(shown_events(self.decoded, self.seq)).decode()
        return self._data


class Feed:
    __slots__ = ("bytes", "entries", "finished", "listeners")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.bytes = 0
        self.finished = False
        self.listeners: set[asyncio.Queue[Entry | None]] = set()

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq if self.entries else 0


class RunFeeds:
    def __init__(self) -> None:
        self.position = 0  # the runs-stream sequence noted last
        self.bytes = 0
        self.feeds: OrderedDict[str, Feed] = OrderedDict()
        self.ended: OrderedDict[str, float] = OrderedDict()  # run id -> when its feed ended
        self._moved = asyncio.Event()
        self.served = 0  # streams served from memory
        self.fell_back = 0  # streams a feed could not serve (read from the log)
        self.watchers: set[ChangeWatcher] = set()  # `GET /runs/changes` streams (maze/api/live.py)

    # ---- fed by the controller (in stream order, on the event loop) ---------------------------
    def note(self, subject: str, seq: int, decoded: Decoded, size: int) -> None:
        self.position = max(self.position, seq)
        run_id = subjects.run_id_of(subject)
        if self.watchers and run_id != subjects.LEADER_RUN_ID:
            for watcher in self.watchers:
                watcher.note(run_id, seq)
        feed = self.feeds.get(run_id)
        if feed is None:
            if not any(isinstance(e, RunCreated) for e in decoded.events):
                self._moved_on()
                return  # a run this process did not see from its start: read from the log
            feed = self.feeds[run_id] = Feed()
            if len(self.feeds) > MAX_FEEDS:
                self._drop(next(iter(self.feeds)))
        if seq > feed.last_seq:  # a replay after a controller restart repeats what is here
            entry = Entry(seq, decoded, any(isinstance(e, RunFinished) for e in decoded.events))
            feed.entries.append(entry)
            feed.bytes += size
            self.bytes += size
            for queue in list(feed.listeners):
                if queue.qsize() >= LISTENER_MAX:  # a reader that does not keep up: off to the log
                    feed.listeners.discard(queue)
                    queue.put_nowait(None)
                    self.fell_back += 1
                else:
                    queue.put_nowait(entry)
            if entry.finished and not feed.finished:
                feed.finished = True
                self.ended[run_id] = time.monotonic()
                self._expire()
            if feed.bytes > FEED_MAX_BYTES:
                self._drop(run_id)
            if self.bytes > TOTAL_MAX_BYTES:
                self._shed()
        self._moved_on()

    def _shed(self) -> None:
        """Drop feeds until all fit again: ended ones first, then those nobody follows, oldest
        first; followed live ones last (their readers go on from the log)."""
        for pick in (
            lambda f: f.finished,
            lambda f: not f.listeners,
            lambda f: True,
        ):
            for run_id in [r for r, f in self.feeds.items() if pick(f)]:
                if self.bytes <= TOTAL_MAX_BYTES * 3 // 4:
                    return
                self._drop(run_id)

    def _moved_on(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()

    def _drop(self, run_id: str) -> None:
        feed = self.feeds.pop(run_id, None)
        self.ended.pop(run_id, None)
        if feed is not None:
            self.bytes -= feed.bytes
            for queue in feed.listeners:
                queue.put_nowait(None)  # that reader goes on from the log

    def _expire(self) -> None:
        cutoff = time.monotonic() - ENDED_KEPT_S
        while self.ended:
            run_id, at = next(iter(self.ended.items()))
            if at > cutoff and len(self.ended) <= ENDED_KEPT:
                break
            self._drop(run_id)

    # ---- read by the API ----------------------------------------------------------------------
    async def reach(self, seq: int, timeout: float) -> bool:
        """Wait (bounded) until the controller has noted the runs stream up to `seq`."""
        deadline = time.monotonic() + timeout
        while self.position < seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._moved.wait(), left)
            except TimeoutError:
                return False
        return True

    def knows(self, run_id: str) -> bool:
        """Whether this process holds the run's complete feed."""
        return run_id in self.feeds

    def follow(self, run_id: str, after: int) -> AsyncIterator[list[Entry]] | None:
        """The run's messages after stream sequence `after`, then live until it ends, in batches of
        what is there at once (one write to the client each); None when this process has no
        complete feed of the run (read it from the log instead). Raises FeedDropped if the feed is
        dropped while being read (go on from the log after the last sequence sent). Ends without a
        batch when the feed ended at or before `after`."""
        self._expire()
        feed = self.feeds.get(run_id)
        if feed is None:
            self.fell_back += 1
            return None
        self.served += 1
        return self._follow(run_id, feed, after)

    async def _follow(self, run_id: str, feed: Feed, after: int) -> AsyncIterator[list[Entry]]:
        # taken on the first step, in one go with registering (nothing can land in between); a
        # reader that never starts registers nothing
        if self.feeds.get(run_id) is not feed:
            raise FeedDropped
        backlog = [e for e in feed.entries if e.seq > after]
        if feed.finished and not backlog:
            return
        queue: asyncio.Queue[Entry | None] = asyncio.Queue()
        feed.listeners.add(queue)
        sent = after
        try:
            batch: list[Entry | None] = list(backlog)
            while True:
                if not batch:
                    batch.append(await queue.get())
                while not queue.empty():
                    batch.append(queue.get_nowait())
                fresh: list[Entry] = []
                for entry in batch:
                    if entry is None or entry.seq <= sent:
                        continue
                    fresh.append(entry)
                    if entry.finished:
                        break
                dropped = None in batch
                batch = []
                if fresh:
                    yield fresh  # what came before a drop is handed over first
                    sent = fresh[-1].seq
                    if fresh[-1].finished:
                        return
                if dropped:
                    raise FeedDropped
        finally:
            feed.listeners.discard(queue)

    def stats(self) -> dict[str, Any]:
        return {
            "runs": len(self.feeds),
            "ended_runs": len(self.ended),
            "position": self.position,
            "bytes": self.bytes,
            "served": self.served,
            "read_from_log": self.fell_back,
        }


class FeedDropped(Exception):
    """The feed was dropped mid-read: continue from the log after the last sequence sent."""
