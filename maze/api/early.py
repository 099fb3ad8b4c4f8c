"""A new run's first attempts on the head's own worker, started while its message is made and stored.

The API places a run's first tasks before its `run.created` is stored (their placements travel in
that message). Those placed on the worker in this head's process are handed to it at once, and
start; what they report waits behind a *gate*: that message stored with these placements. The
message then waits for them a little (setting `early_linger_ms`, 2 ms: a no-op's task process
answers in ~0.2-0.6 ms here, a short chain's first links in ~1 ms; less when they are done
sooner; an attempt that runs longer delays its run's record by that much, not its own end), and
takes in what they reported by then: their starts and ends, and those of the followers that ran after them
(maze/workers/follow.py). When those are a success of each of the run's tasks, its `run.finished`
joins them (maze/head/run_end.py): a no-op run, or a short chain, is one fsynced write.

What is not taken (an attempt still running, reports that do not fit) is sent by the worker once
the message is stored, in order after it. If the message is not stored as made (a transient
error, the same request's other copy stored first by another head, this head deposed meanwhile,
its worker leaving), the gate closes: the attempts stop, what they did is recorded nowhere, and
the log's placements (if stored) are handed again, or sent by the controller's delivery check.
Their tasks then run again: at least once, as for an attempt whose report is lost (a request
answered an error may have run them; so may a head killed in between, whose client was answered
nothing and whose retry runs them again). Two copies of one request sent to this head at once are
recorded in turn (RunController.submit_turn), the copy started early first.

Only plain work starts early: code of a static run, with no files, sandbox or GPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from maze.core import hops
from maze.core.clock import now_ms
from maze.events.catalog import Event, event_tag
from maze.events.codec import append_events
from maze.events.runs import RunCreated
from maze.events.tasks import AttemptSucceeded
from maze.events.work import WorkItem
from maze.head.controller import LocalNode, RunController
from maze.head.run_end import ends_with
from maze.head.scheduler import Decision
from maze.workers.files import has_files

_MARGIN = 64  # the message's list header growing with the events taken in
_encoder = msgspec.msgpack.Encoder()


def starts_early(item: WorkItem) -> bool:
    """Plain work: no files to stage, no sandbox, no GPU (what may refuse it or wait on a node)."""
    return not (item.resources.sandbox or item.resources.network or item.gpus or has_files(item))


@dataclass
class Early:
    controller: RunController
    node: LocalNode
    epoch: int
    gate: asyncio.Future[bool]
    handed: set[tuple[str, str, int]]
    told: list[asyncio.Future[bool]] = field(default_factory=list)
    took: bool = False  # reports joined the message: stored with it, they stand whatever follows
    settled: bool = False

    @classmethod
    def start(cls, controller: RunController, decision: Decision, static: bool) -> Early | None:
        """Hand the decision's plain work for this head's own worker to it now (None: none taken)."""
        node = controller.local_node
        if node is None or not static or decision.code:
            return None
        items = decision.work.get(node.node_id, [])
        if not items or not all(starts_early(item) for item in items):
            return None
        gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            handed = node.take_early(items, gate)
        except BaseException:  # (what it took before failing stops)
            node.settle_early(gate, set(), [], False)
            raise
        if not handed:
            gate.set_result(False)
            return None
        controller.metrics.work_handed.inc(len(handed))
        return cls(controller, node, controller.lease.epoch, gate, handed)

    async def gather(
        self, created: RunCreated, placed: Sequence[Event], encoded: list[bytes], budget: int
    ) -> str | None:
        """Wait for the attempts (at most `early_linger_ms`), then take what they reported into the
        run's first message (`encoded[0]`: `created` and its placements), and the run's end when
        that is all of it. Returns that message's event types when reports were taken, else None."""
        await self.node.early_quiet(self.gate, self.controller.settings.early_linger_ms / 1000)
        if not self._deciding():
            return None  # deposed meanwhile: its placements may be refused, nothing joins them
        room = budget - len(encoded[0]) - _MARGIN
        data: dict[int, bytes] = {}  # each report encoded once: sized, then appended

        def size(event: Event) -> int:
            data[id(event)] = _encoder.encode(event)
            return len(data[id(event)])

        reports, self.told = self.node.take_reports(self.gate, room, size)
        if not reports:
            return None
        self.took = True
        more = [data[id(event)] for event in reports]
        end = ends_with(created, [*placed, *reports], now_ms(), self.epoch)
        if end is not None and size(end) <= room - sum(map(len, more)):
            reports.append(end)
            more.append(data[id(end)])
        encoded[0] = append_events(encoded[0], more)  # (a wide run's message: not encoded again)
        if hops.enabled():
            for event in reports:
                if isinstance(event, AttemptSucceeded):
                    hops.mark("early_taken", event.run_id)
        return ",".join(sorted({event_tag(e) for e in [created, *placed, *reports]}))

    def _deciding(self) -> bool:
        return self.controller.deciding and self.controller.lease.epoch == self.epoch

    def settle(self, stored: bool) -> bool:
        """The run's message was stored as made (with these placements and reports), or not. A
        head deposed meanwhile stops them too: its placements may be refused (the new leader
        places them again); if they stand, their work is handed again (`submitted`). Returns
        whether they go on (their work must then not be handed again)."""
        if self.settled:
            return False
        self.settled = True
        go_on = stored and (self.took or self._deciding())
        self.node.settle_early(self.gate, self.handed, self.told, go_on)
        return go_on
