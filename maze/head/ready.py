"""Ready tasks, one FIFO queue per resource shape, so a placement pass costs what it places.

A pass takes the oldest ready task over all shapes (a heap of the shapes' heads), asks the placer
for a node, and on the first task of a shape that finds none records one pending reason for that
shape and leaves the rest of its queue alone: tasks of one shape fit the same nodes, so they would
all find none. A big task therefore never blocks smaller ones, tasks are placed in the order they
became ready, and a pass costs O((placed + shapes) log shapes), not O(ready).

Entries are deleted lazily: removing a task only forgets its membership; its stale queue entry is
skipped when it reaches the head (or when a queue is mostly stale, compacted).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator

from maze.events.specs import Resources

TaskKey = tuple[str, str]
Entry = tuple[int, TaskKey]  # (readiness sequence, task)
SKIPPED = ""  # try_place's answer for a task that is not placeable at all


class ReadyQueues:
    def __init__(self) -> None:
        self.queues: dict[Resources, deque[Entry]] = {}
        self.members: dict[TaskKey, tuple[Resources, int]] = {}  # live task -> (shape, seq)
        self.counts: dict[Resources, int] = {}  # live tasks per shape
        self.reasons: dict[Resources, str] = {}  # why the head of a shape found no node
        self._seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self.members)

    # ---- snapshots ----------------------------------------------------------------------------
    def live(self) -> list[tuple[TaskKey, Resources, int]]:
        """Every queued task with its shape and readiness sequence (stale entries left out)."""
        return [(key, shape, seq) for key, (shape, seq) in self.members.items()]

    def next_seq(self) -> int:
        nxt = next(self._seq)
        self._seq = itertools.count(nxt)
        return nxt

    def restore(
        self, live: list[tuple[TaskKey, Resources, int]], next_seq: int, reasons: dict[Resources, str]
    ) -> None:
        """The queues `live` and `next_seq` describe, in readiness order."""
        for key, shape, seq in sorted(live, key=lambda entry: entry[2]):
            self.members[key] = (shape, seq)
            self.counts[shape] = self.counts.get(shape, 0) + 1
            self.queues.setdefault(shape, deque()).append((seq, key))
        self._seq = itertools.count(next_seq)
        self.reasons = {shape: why for shape, why in reasons.items() if shape in self.queues}

    def __contains__(self, key: TaskKey) -> bool:
        return key in self.members

    def add(self, key: TaskKey, shape: Resources) -> None:
        """Queue a task at the back of its shape's queue; a task already queued stays where it is."""
        if key in self.members:
            return
        seq = next(self._seq)
        self.members[key] = (shape, seq)
        self.counts[shape] = self.counts.get(shape, 0) + 1
        queue = self.queues.get(shape)
        if queue is None:
            queue = self.queues[shape] = deque()
        queue.append((seq, key))

    def discard(self, key: TaskKey) -> None:
        member = self.members.pop(key, None)
        if member is None:
            return
        shape = member[0]
        left = self.counts[shape] - 1
        if left:
            self.counts[shape] = left
            queue = self.queues[shape]
            if len(queue) > 64 and len(queue) > 4 * left:
                self._compact(shape)
        else:  # nothing live of this shape: drop its queue and reason
            del self.counts[shape]
            del self.queues[shape]
            self.reasons.pop(shape, None)

    def _compact(self, shape: Resources) -> None:
        members = self.members
        self.queues[shape] = deque(e for e in self.queues[shape] if members.get(e[1], (None, 0))[1] == e[0])

    def _head(self, shape: Resources) -> Entry | None:
        """The oldest live entry of a shape, stale ones dropped on the way."""
        queue = self.queues[shape]
        members = self.members
        while queue:
            entry = queue[0]
            member = members.get(entry[1])
            if member is not None and member[1] == entry[0]:
                return entry
            queue.popleft()
        return None

    def reason(self, key: TaskKey) -> str | None:
        """Why a queued task is not placed yet: its shape's reason (None when not queued or its
        shape has not been refused)."""
        member = self.members.get(key)
        return self.reasons.get(member[0]) if member is not None else None

    def place(self, try_place: Callable[[TaskKey, Resources], str | None]) -> None:
        """One placement pass. `try_place(task, shape)` returns None when it placed the task,
        SKIPPED when the task turned out not to be placeable at all (it is dropped), or the reason
        no node can take its shape now (the shape is left for this pass)."""
        heads: list[tuple[int, Resources]] = []
        for shape in list(self.queues):
            head = self._head(shape)
            if head is not None:
                heads.append((head[0], shape))
        heapq.heapify(heads)
        while heads:
            _, shape = heapq.heappop(heads)
            if shape not in self.queues:
                continue
            head = self._head(shape)
            if head is None:
                continue
            key = head[1]
            why = try_place(key, shape)
            if why:
                self.reasons[shape] = why  # the rest of this shape would find no node either
                continue
            if why is None:
                self.reasons.pop(shape, None)
            self.discard(key)
            if shape in self.queues:
                nxt = self._head(shape)
                if nxt is not None:
                    heapq.heappush(heads, (nxt[0], shape))

    def sample(self, limit: int) -> Iterator[tuple[Resources, TaskKey]]:
        """Up to `limit` queued tasks, the oldest of each shape, shared fairly between shapes (the
        shortest queues first, what they leave goes to the longer ones)."""
        shapes = sorted(self.queues, key=lambda shape: self.counts.get(shape, 0))
        left = limit
        for index, shape in enumerate(shapes):
            share = max(1, left // (len(shapes) - index))
            for seq, key in self.queues[shape]:
                if share <= 0 or left <= 0:
                    break
                member = self.members.get(key)
                if member is not None and member[1] == seq:
                    share -= 1
                    left -= 1
                    yield shape, key
