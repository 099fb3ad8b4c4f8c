"""Work delivery, reconciled with the log (DESIGN.md §6.7).

A work message is transport, the log is the record: an attempt recorded `attempt.placed` whose
work never reached its node (the head died between the two publishes, a publish failed, a message
was lost) would wait for ever. So every attempt placed and not yet started is tracked here, and its
work is sent again from what the log says about it (the same node, session, GPUs and inputs) after
`resend_after_ms`, then after twice that, up to `MAX_BACKOFF_MS`; every such attempt is due at once
when the controller starts. Sending twice is harmless: a worker starts each attempt once (it keeps
the attempt keys it has seen).

`awaiting` is folded state (from the log); the due times and counts are not (they restart with the
controller).
"""

from __future__ import annotations

import heapq

AttemptKey = tuple[str, str, int]
MAX_BACKOFF_MS = 60_000


class Delivery:
    def __init__(self, resend_after_ms: int = 5_000) -> None:
        self.resend_after_ms = resend_after_ms
        self.awaiting: dict[AttemptKey, None] = {}  # placed, not started, not ended (folded)
        self._due: list[tuple[int, AttemptKey]] = []
        self._sends: dict[AttemptKey, int] = {}

    # ---- folding ------------------------------------------------------------------------------
    def placed(self, key: AttemptKey, at_ms: int) -> None:
        if key in self.awaiting:
            return
        self.awaiting[key] = None
        heapq.heappush(self._due, (at_ms + self.resend_after_ms, key))

    def settled(self, key: AttemptKey) -> None:
        """Started, or ended: nothing more to deliver."""
        self.awaiting.pop(key, None)
        self._sends.pop(key, None)

    # ---- deciding -----------------------------------------------------------------------------
    def all_due_now(self, now_ms: int) -> None:
        """At start: every attempt placed and not started may never have been sent."""
        self._due = [(now_ms, key) for key in self.awaiting]
        heapq.heapify(self._due)

    def sent(self, key: AttemptKey, now_ms: int) -> int:
        """Work for `key` was just sent: when to look again. Returns the send count."""
        count = self._sends.get(key, 0) + 1
        self._sends[key] = count
        backoff = min(MAX_BACKOFF_MS, self.resend_after_ms * 2 ** (count - 1))
        heapq.heappush(self._due, (now_ms + backoff, key))
        return count

    def due(self, now_ms: int) -> list[AttemptKey]:
        """Attempts still awaiting their start whose time to be looked at has come."""
        out: list[AttemptKey] = []
        seen: set[AttemptKey] = set()
        while self._due and self._due[0][0] <= now_ms:
            _, key = heapq.heappop(self._due)
            if key in self.awaiting and key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def next_due(self) -> int | None:
        while self._due and self._due[0][1] not in self.awaiting:
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None
