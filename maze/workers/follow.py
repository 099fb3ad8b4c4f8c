"""Followers on the node (maze/head/followers.py): held until the attempt they follow ends here,
then run at once in its slot, while its success is being stored. What a follower reports waits
behind that success (its *gate*): sent once the success is stored as it is, dropped if it is not
(the controller then records the follower lost, and places it again). A follower's own success
gates the next follower's reports alike, so a chain runs at the speed of its task processes and
its reports reach the log in chain order, each after the success it depends on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from maze.events.catalog import Event
from maze.events.codec import encode_value
from maze.events.values import decode_map_raw
from maze.events.work import WorkItem

Key = tuple[str, str, int]
Emit = Callable[[Event, "asyncio.Future[bool] | None"], None]


def filled(item: WorkItem, result: bytes) -> WorkItem | str:
    """The follower as an ordinary work item, its inputs whole; or why it cannot run (an output it
    reads that its upstream did not return: the message the controller gives the same case)."""
    try:
        values = dict(decode_map_raw(item.inputs))
        given = decode_map_raw(result)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"the inputs of task {item.task_id} could not be read: {exc}"
    for name, key in item.after_inputs.items():
        wire = given.get(key)
        if wire is None:
            shown = ", ".join(repr(k) for k in sorted(given)[:20])
            return (
                f"input {name!r} refers to output {key!r} of task {item.after}, "
                f"which returned only [{shown}{', …' if len(given) > 20 else ''}]"
            )
        values[name] = wire
    return msgspec.structs.replace(
        item, inputs=encode_value(values), after="", after_attempt=0, after_inputs={}
    )


class Followers:
    def __init__(self, emit: Emit) -> None:
        self.emit = emit  # to the outbox: (event, future told whether it was stored as it is)
        self.held: dict[Key, WorkItem] = {}  # followers waiting for the attempt they follow
        self.after: dict[Key, Key] = {}  # attempt -> its follower's
        self.gates: dict[Key, asyncio.Future[bool]] = {}  # follower running -> its upstream stored
        self.gated: dict[Key, list[tuple[Event, asyncio.Future[bool] | None]]] = {}  # held reports
        self.live: set[Key] = set()  # followers started whose attempt has not ended

    def hold(self, item: WorkItem) -> None:
        self.held[item.key] = item
        self.after[(item.run_id, item.after, item.after_attempt)] = item.key

    def holds(self, key: Key) -> bool:
        return key in self.held

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
        self.gates[item.key] = stored
        self.live.add(item.key)
        stored.add_done_callback(lambda done: self._opened(item.key, done))
        return item, filled(item, result)

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
        """An attempt's report: sent now, held behind its gate, or dropped behind a closed one."""
        gate = self.gates.get(key)
        if gate is None or (gate.done() and gate.result()):
            self.emit(event, stored)
        elif not gate.done():
            self.gated.setdefault(key, []).append((event, stored))
        elif stored is not None and not stored.done():
            stored.set_result(False)  # never sent: what follows it is dropped in turn

    def ended(self, key: Key) -> None:
        """A follower's attempt ended here (what it reported is sent or held)."""
        self.live.discard(key)
        gate = self.gates.get(key)
        if gate is not None and gate.done():
            del self.gates[key]

    def _opened(self, key: Key, gate: asyncio.Future[bool]) -> None:
        ok = not gate.cancelled() and gate.result()
        for event, stored in self.gated.pop(key, []):
            if ok:
                self.emit(event, stored)
            elif stored is not None and not stored.done():
                stored.set_result(False)
        if ok or key not in self.live:
            self.gates.pop(key, None)

    def clear(self) -> None:
        self.held.clear()
        self.after.clear()
        self.gates.clear()
        for reports in self.gated.values():
            for _, stored in reports:
                if stored is not None and not stored.done():
                    stored.set_result(False)
        self.gated.clear()
        self.live.clear()
