"""Followers on the node (maze/head/followers.py): held until the attempt they follow ends here,
then run at once in its slot, speculatively, while that attempt's success is being stored. What a
follower reports waits behind that success (its *gate*): sent, in order, once the success is
stored as it is; dropped if it is not (replaced by a failure that fits, or refused), and the
follower is then stopped (the controller records it lost, and places it again). A follower's own
success gates the next follower's reports alike, so a chain runs at the speed of its task
processes and its reports reach the log in chain order, each after the success it depends on.
(A worker killed in that window leaves a follower that ran and is recorded lost before it
started: like any attempt whose report was lost, it runs again.)

The head's own worker also runs a new run's first attempts behind a gate: the run's message,
being stored (maze/api/early.py). What they (and the followers after them) report by the time
that message leaves is taken into it (`take`), so a short run's placement, start and result are
one write."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterator

import msgspec

from maze.events.catalog import Event
from maze.events.codec import encode_value
from maze.events.values import decode_map_raw, missing_output
from maze.events.work import WorkItem

Key = tuple[str, str, int]
Emit = Callable[[Event, "asyncio.Future[bool] | None"], None]
# successes of attempts a follower was placed after, kept for a follower whose work comes late
RECENT_KEPT = 64
RECENT_BYTES = 16 * 1024 * 1024


def filled(item: WorkItem, result: bytes) -> WorkItem | str:
    """The follower as an ordinary work item, its inputs whole; or why it cannot run (an output it
    reads that its upstream did not return: the controller's words for the same case)."""
    try:
        values = dict(decode_map_raw(item.inputs))
        given = decode_map_raw(result)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"the inputs of task {item.task_id} could not be read: {exc}"
    for name, key in item.after_inputs.items():
        wire = given.get(key)
        if wire is None:
            return missing_output(name, key, item.after, sorted(given))
        values[name] = wire
    return msgspec.structs.replace(
        item, inputs=encode_value(values), after="", after_attempt=0, after_inputs={}
    )


def told_unstored(stored: asyncio.Future[bool]) -> bool:
    """Whether the outbox said a success was not stored as it is (nothing may follow it)."""
    return stored.done() and not stored.result()


class Followers:
    def __init__(self, emit: Emit, closed: Callable[[Key], None]) -> None:
        self.emit = emit  # to the outbox: (event, future told whether it was stored as it is)
        self.closed = closed  # a follower started behind a success not stored as it is: stop it
        self.recent: OrderedDict[Key, tuple[asyncio.Future[bool], bytes]] = OrderedDict()
        self.recent_bytes = 0
        self.held: dict[Key, WorkItem] = {}  # followers waiting for the attempt they follow
        self.after: dict[Key, Key] = {}  # attempt -> its follower's
        self.gates: dict[Key, asyncio.Future[bool]] = {}  # follower running -> its upstream stored
        self.gated: dict[Key, list[tuple[Event, asyncio.Future[bool] | None]]] = {}  # held reports
        self.live: set[Key] = set()  # gated attempts (followers, early ones) not ended
        self.waiters: list[asyncio.Future[None]] = []  # told when a gated attempt ends
        self.void: set[Key] = set()  # closed behind a gate that was not stored, not ended yet

    def hold(self, item: WorkItem) -> None:
        self.held[item.key] = item
        self.after[(item.run_id, item.after, item.after_attempt)] = item.key

    def holds(self, key: Key) -> bool:
        return key in self.held

    def release(self, key: Key) -> None:
        """Follower `key` held no more (its placement was superseded), whatever it followed."""
        item = self.held.pop(key, None)
        up = (item.run_id, item.after, item.after_attempt) if item is not None else None
        if up is not None and self.after.get(up) == key:
            del self.after[up]

    def note_success(self, key: Key, stored: asyncio.Future[bool], result: bytes) -> None:
        """Attempt `key`, which a follower was placed after, succeeded here: kept a while, for a
        follower whose work comes after that (in another message)."""
        self.recent[key] = (stored, result)
        self.recent_bytes += len(result)
        while len(self.recent) > RECENT_KEPT or self.recent_bytes > RECENT_BYTES:
            self.recent_bytes -= len(self.recent.popitem(last=False)[1][1])

    def succeeded(self, key: Key) -> tuple[asyncio.Future[bool], bytes] | None:
        """Attempt `key`'s success here, if kept and not known unstored."""
        done = self.recent.get(key)
        return None if done is None or told_unstored(done[0]) else done

    def follows(self, key: Key) -> bool:
        """Whether a follower waits for attempt `key` (its success must then say when stored)."""
        return key in self.after

    def start(
        self, key: Key, stored: asyncio.Future[bool], result: bytes
    ) -> tuple[WorkItem, WorkItem | str] | None:
        """Attempt `key` succeeded here and its success is on its way to the log: its follower, and
        that follower ready to run now (or why it cannot: reported failed, behind the gate)."""
        follower = self.after.pop(key, None)
        item = self.held.pop(follower, None) if follower is not None else None
        if item is None:
            return None
        self.gate(item.key, stored)
        return item, filled(item, result)

    def gate(self, key: Key, gate: asyncio.Future[bool]) -> None:
        """Attempt `key` runs before what it depends on is stored: what it reports waits for `gate`
        (sent once it is True; dropped, and the attempt stopped, if it is False)."""
        self.gates[key] = gate
        self.live.add(key)
        gate.add_done_callback(lambda done: self._opened(key, done))

    def _chain(self, gate: asyncio.Future[bool]) -> Iterator[tuple[Key, bool]]:
        """The gated attempts behind `gate`, directly or behind a success held behind it, each after
        the attempt whose success it waits on: (key, still running). What is behind a running
        one's success is not reached (it has none yet). One walk over the gates, then the chain."""
        behind: dict[asyncio.Future[bool], list[Key]] = {}
        for key, waits_on in self.gates.items():
            behind.setdefault(waits_on, []).append(key)
        frontier = [gate]
        while frontier:
            after: list[asyncio.Future[bool]] = []
            for future in frontier:
                for key in behind.get(future, []):
                    running = key in self.live
                    if not running:
                        after += [s for _, s in self.gated.get(key, []) if s is not None]
                    yield key, running
            frontier = after

    def settle_now(self, resolved: set[asyncio.Future[bool]]) -> None:
        """Gates just resolved: what waits behind each is sent, or dropped and its attempt stopped,
        now, and so on down the chain (a success dropped closes the gate of what follows it); their
        callbacks, a turn of the loop later, then find it done."""
        pending = set(resolved)
        while pending:
            dropped: set[asyncio.Future[bool]] = set()
            for key, gate in list(self.gates.items()):
                if gate in pending and gate.done():
                    held = [stored for _, stored in self.gated.get(key, []) if stored is not None]
                    self._opened(key, gate)
                    dropped.update(s for s in held if s.done())
            pending = dropped

    def running_behind(self, gate: asyncio.Future[bool]) -> bool:
        return any(running for _, running in self._chain(gate))

    def take(
        self, gate: asyncio.Future[bool], room: int, size: Callable[[Event], int]
    ) -> tuple[list[Event], list[asyncio.Future[bool]]]:
        """What the attempts behind `gate` that have ended hold, in order, taken out (their gates
        forgotten) for the message `gate` stands for, within `room` bytes (`size`: one event's): the
        events, and their `stored` futures, for the taker to resolve as that message's fate. Stops
        at the first that does not fit (what follows may depend on it); one still running is left,
        with what is behind it."""
        events: list[Event] = []
        told: list[asyncio.Future[bool]] = []
        for key, running in self._chain(gate):
            if running:
                continue
            held = self.gated.get(key, [])
            cost = sum(size(event) for event, _ in held)
            if cost > room:
                break
            room -= cost
            del self.gates[key]
            self.gated.pop(key, None)
            events += [event for event, _ in held]
            told += [stored for _, stored in held if stored is not None]
        return events, told

    def drop_after(self, key: Key) -> list[Key]:
        """Attempt `key` will not succeed here: the chain held after it goes (the controller records
        it lost). Returns the followers dropped."""
        dropped = []
        follower = self.after.pop(key, None)
        while follower is not None:
            self.held.pop(follower, None)
            dropped.append(follower)
            follower = self.after.pop(follower, None)
        return dropped

    def drop_run(self, run_id: str) -> list[Key]:
        dropped = []
        for key in [k for k in self.after if k[0] == run_id]:
            dropped += self.drop_after(key)
        return dropped

    def report(self, key: Key, event: Event, stored: asyncio.Future[bool] | None = None) -> None:
        """An attempt's report: sent now, held behind its gate, or dropped behind a closed one. In
        order: a gate that opened (its callback not run yet) sends what it held first."""
        if key in self.void:  # stopped as void: nothing it says may be recorded
            if stored is not None and not stored.done():
                stored.set_result(False)
            return
        gate = self.gates.get(key)
        if gate is None:
            self.emit(event, stored)
            return
        self.gated.setdefault(key, []).append((event, stored))
        if gate.done():
            self._opened(key, gate)

    def ended(self, key: Key) -> None:
        """A follower's attempt ended here (what it reported is sent or held)."""
        self.live.discard(key)
        self.void.discard(key)
        gate = self.gates.get(key)
        if gate is not None and gate.done():
            self._opened(key, gate)  # (its callback may not have run yet: what it holds goes now)
        if gate is not None and self.waiters:
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _opened(self, key: Key, gate: asyncio.Future[bool]) -> None:
        if self.gates.get(key) is not gate:
            return  # (dropped meanwhile)
        ok = not gate.cancelled() and gate.result()
        for event, stored in self.gated.pop(key, []):
            if ok:
                self.emit(event, stored)
            elif stored is not None and not stored.done():
                stored.set_result(False)  # never sent: what follows it is dropped in turn
        if ok or key not in self.live:
            self.gates.pop(key, None)
        elif key in self.live:
            self.live.discard(key)
            self.void.add(key)  # (until it ends: what it still reports is dropped)
            self.closed(key)

    def void_run(self, run_id: str) -> list[Key]:
        """The run's followers running behind a gate still closed: what they report is dropped,
        and their gates stay shut (their run ended, or lost them). Returns them."""
        voided = [k for k, gate in self.gates.items() if k[0] == run_id and not gate.done()]
        for key in voided:
            shut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            shut.set_result(False)
            self.gates[key] = shut  # (the old gate's callback then finds it replaced)
            for _, stored in self.gated.pop(key, []):
                if stored is not None and not stored.done():
                    stored.set_result(False)
        return [k for k in voided if k in self.live]

    def clear(self) -> None:
        self.recent.clear()
        self.recent_bytes = 0
        self.held.clear()
        self.after.clear()
        self.gates.clear()
        for reports in self.gated.values():
            for _, stored in reports:
                if stored is not None and not stored.done():
                    stored.set_result(False)
        self.gated.clear()
        self.live.clear()
        self.void.clear()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters = []
