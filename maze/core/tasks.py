"""Stopping asyncio tasks for certain.

On Python 3.11, `asyncio.wait_for` (which nats-py uses for every request, a KV put among them)
swallows a cancellation that arrives just as the awaited reply does (cpython gh-86296, fixed in
3.12): the task goes on as if never cancelled. A loop cancelled at that moment keeps running, and
whoever awaits its end waits forever — a worker thawed after being frozen kept beating for its lost
session and never rejoined. `cancel_and_wait` cancels again until the task has really ended."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

RECANCEL_EVERY_S = 0.2


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None], timeout: float | None = None) -> bool:
    """Cancel `tasks` and wait until every one has ended, cancelling again each RECANCEL_EVERY_S
    while one still runs (a swallowed cancel). Their results and errors are dropped. True when all
    ended; False when `timeout` passed first (they are left cancelled, and named in the log)."""
    given = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    tries = 0
    while pending:
        for task in pending:
            task.cancel()
        wait_s = RECANCEL_EVERY_S if deadline is None else min(RECANCEL_EVERY_S, deadline - loop.time())
        if wait_s <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=wait_s)
        tries += 1
        if pending and tries == 5:
            log.warning("tasks.cancel_not_taken_yet", tasks=sorted(t.get_name() for t in pending))
    for task in given:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
    if pending:
        log.warning("tasks.not_ended", tasks=sorted(t.get_name() for t in pending), timeout_s=timeout)
        return False
    return True
