"""When a failed attempt is tried again, and the backoffs waiting to end. Pure, unit-tested."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from maze.core.task_machine import canonical_error_type
from maze.events.specs import RetryPolicy, TaskError

NODE_LOST = "node_lost"
# Errors no retry can fix by default: the same code and inputs fail the same way. A retry_on that
# names one explicitly still retries it (`resource_unavailable`: room may free up later).
NEVER_RETRY = frozenset(
    {"invalid_result", "serialization_error", "invalid_input", "resource_unavailable", "payload_too_large"}
)


def named(policy: RetryPolicy, error_type: str) -> bool:
    """Whether `retry_on` names this error type (by its name or the original Maze's, `timeout`)."""
    return any(canonical_error_type(n) == error_type for n in policy.retry_on)


def retry_budget(policy: RetryPolicy, error_type: str) -> int:
    """How many retries this kind of failure gets.

    `retry_on` empty means every retryable error (NEVER_RETRY aside); a type it names is retried
    up to `max_retries` times, NEVER_RETRY or not. A lost node (`node_lost`) gets `max_retries`
    retries and at least one (so one with the default `max_retries=0`), unless `retry_on` is given
    and leaves it out."""
    error_type = canonical_error_type(error_type)
    asked = named(policy, error_type)
    if error_type in NEVER_RETRY and not asked:
        return 0
    covered = not policy.retry_on or asked
    budget = policy.max_retries if covered else 0
    if error_type == NODE_LOST and covered:
        budget = max(budget, 1)
    return budget


def next_attempt_delay_ms(policy: RetryPolicy, error: TaskError, failures: int) -> int | None:
    """Delay before the next attempt of a task that has failed `failures` times (this one
    included), or None if that was its last allowed failure. Only failures count: a rejection, or
    an attempt lost before it started, uses no retry. An error its origin marked not retryable (a
    corrupt blob, say) is not retried, even if `retry_on` names its type: the same attempt would
    fail the same way."""
    if failures > retry_budget(policy, error.error_type):
        return None
    if not error.retryable and error.error_type != NODE_LOST:
        return None
    if error.error_type == NODE_LOST:
        return 0
    return int(policy.backoff_seconds * 1000 * (2 ** (failures - 1)))


TaskKey = tuple[str, str]


class RetryTimers:
    """Tasks waiting out a retry backoff, in a heap by due time: a pass pops only what is due.

    Entries are never removed early; one whose task has moved on (its run ended, or a later
    attempt was scheduled) is dropped when it comes up, as the caller's `still_waiting` says."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, str, int]] = []  # (due, seq, run, task, attempt)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def state(self) -> tuple[list[tuple[int, int, str, str, int]], int]:
        return list(self._heap), self._seq

    def restore(self, heap: list[tuple[int, int, str, str, int]], seq: int) -> None:
        self._heap = list(heap)
        heapq.heapify(self._heap)
        self._seq = seq

    def schedule(self, key: TaskKey, due_ms: int, next_attempt: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, key[0], key[1], next_attempt))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int, still_waiting: Callable[[TaskKey, int], bool]) -> list[TaskKey]:
        """Tasks whose backoff is over at `now_ms`, in due order."""
        out: list[TaskKey] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            _, _, run_id, task_id, attempt = heapq.heappop(heap)
            if still_waiting((run_id, task_id), attempt):
                out.append((run_id, task_id))
        return out

    def sample(self, limit: int) -> Iterator[tuple[int, TaskKey, int]]:
        """Up to `limit` entries (due, key, attempt), the soonest among them: the top of the heap,
        not a sort of all of it."""
        for due, _, run_id, task_id, attempt in self._heap[:limit]:
            yield due, (run_id, task_id), attempt
