"""When a failed attempt is tried again. Pure, unit-tested."""

from __future__ import annotations

from maze.events.specs import RetryPolicy, TaskError

NODE_LOST = "node_lost"
# Errors no retry can fix: the same code and inputs fail the same way.
NEVER_RETRY = frozenset({"invalid_result", "serialization_error", "invalid_input", "resource_unavailable"})


def retry_budget(policy: RetryPolicy, error_type: str) -> int:
    """How many retries this kind of failure gets.

    `retry_on` empty means every retryable error; a lost node is always worth one retry unless
    `retry_on` is given and leaves `node_lost` out."""
    if error_type in NEVER_RETRY:
        return 0
    covered = not policy.retry_on or error_type in policy.retry_on
    budget = policy.max_retries if covered else 0
    if error_type == NODE_LOST and covered:
        budget = max(budget, 1)
    return budget


def next_attempt_delay_ms(policy: RetryPolicy, error: TaskError, attempt: int) -> int | None:
    """Delay before attempt `attempt + 1`, or None if `attempt` was the last one."""
    if attempt > retry_budget(policy, error.error_type):
        return None
    if error.error_type == NODE_LOST:
        return 0
    return int(policy.backoff_seconds * 1000 * (2 ** (attempt - 1)))
