"""Liveness, readiness and metrics for operators: `GET /healthz`, `/readyz`, `/metrics`.

`/healthz` answers whenever the head's process does (no I/O). `/readyz` answers 200 only when the
head can do its work now: connected to NATS, its run controller caught up with the log, and its
read models no more than READY_MAX_PROJECTOR_LAG runs-stream messages behind the controller.
`/metrics` is the Prometheus text of maze/head/metrics.py.
"""

from __future__ import annotations

import math
import time

from litestar import Response, get

from maze.api.openapi import answers, documented
from maze.api.state import HeadState
from maze.api.views import Alive, Ready
from maze.core.errors import MazeError, Unavailable
from maze.events import subjects
from maze.events.store import ROOM

# How far (in runs-stream messages, i.e. stream sequences; a message holds one or more events) the
# read models may trail the run controller's folded position and the head still be ready: reads
# then wait at most about a batch (the projector writes thousands of events per transaction).
READY_MAX_PROJECTOR_LAG = 10_000
STATUS_TIMEOUT_S = 2.0  # the read models answer their status from memory
# The classic text format (every name here is a legacy one), which every Prometheus reads; Litestar
# adds the charset to a text/* media type itself.
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"


def projector_lag(runs_position: int, projected: int) -> int:
    """Runs-stream messages the controller has folded and the read models have not committed
    (never below zero: the read models may be ahead of the controller)."""
    return max(0, runs_position - projected)


def not_ready(
    nats_connected: bool,
    controller_live: bool,
    lag: int | None,
    max_lag: int = READY_MAX_PROJECTOR_LAG,
    full_for_s: float | None = None,
) -> list[str]:
    """What keeps the head from being ready (empty: ready). `lag` None: the read models did not
    answer. `full_for_s`: how long ago a write of this head's was refused for lack of room in the
    store, with none stored since (None: not so)."""
    reasons = []
    if not nats_connected:
        reasons.append("not connected to NATS")
    if full_for_s is not None:
        reasons.append(
            f"the event store is full: a write was refused for lack of room {full_for_s:.0f} s ago, and "
            "none stored since (give the store room: its max_file_store, an account's limit)"
        )
    if not controller_live:
        reasons.append("the run controller has not caught up with the log")
    if lag is None:
        reasons.append("the read models did not answer")
    elif lag >= max_lag:
        reasons.append(f"the read models are {lag} runs-stream messages behind (ready below {max_lag})")
    return reasons


async def read_projector_lag(head: HeadState) -> int | None:
    """The read models' lag behind the controller's folded runs-stream position (no JetStream
    request), or None when they do not answer."""
    try:
        status = await head.read("status", timeout=STATUS_TIMEOUT_S)
    except MazeError:
        return None
    projected = int(status["positions"].get(subjects.RUNS_STREAM, 0))
    return projector_lag(head.controller.positions[subjects.RUNS_STREAM], projected)


@get("/healthz", responses=answers(token=False), operation_class=documented(open_route=True))
async def healthz() -> Alive:
    """Liveness: the head's process answers (no dependency asked). Open on every head."""
    return Alive(status="ok")


@get("/readyz", responses=answers(503, token=False), operation_class=documented(open_route=True))
async def readyz(head: HeadState) -> Ready:
    """Readiness: 200 when NATS is connected, the run controller is live and the read models are
    within READY_MAX_PROJECTOR_LAG runs-stream messages of it; otherwise 503 saying what is not
    (`details.reasons`). Open on every head."""
    lag = await read_projector_lag(head)
    full = None if ROOM.full_since is None else time.monotonic() - ROOM.full_since
    reasons = not_ready(bool(head.nc.is_connected), head.controller.live, lag, full_for_s=full)
    if reasons:
        raise Unavailable(f"not ready: {'; '.join(reasons)}", reasons=reasons, projector_lag=lag)
    return Ready(status="ready", projector_lag=lag)


@get("/metrics", media_type=METRICS_MEDIA_TYPE, responses=answers())
async def metrics(head: HeadState) -> Response[bytes]:
    """Prometheus text exposition of the head's metrics."""
    lag = await read_projector_lag(head)
    registry = head.controller.metrics
    registry.projector_lag = math.nan if lag is None else float(lag)
    return Response(registry.render(), media_type=METRICS_MEDIA_TYPE)
