"""A node's word on work for an attempt it took from an older leadership (a deposed leader's
placement, refused by every fold), against a real nats-server connection; nothing is started (the
worker does not pull), so what it keeps and what it would report are read as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from maze.events.specs import NodeCapacity, Resources
from maze.events.tasks import AttemptRejected
from maze.events.work import WorkItem
from maze.workers.worker import Worker
from tests.helpers import NatsServer


def item(task_id: str, epoch: int, after: str = "") -> WorkItem:
    return WorkItem(
        run_id="r",
        task_id=task_id,
        attempt=1,
        func_name="f",
        func_hash="c" * 64,
        call_style="kwargs",
        inputs=b"\x80",
        outputs=None,
        resources=Resources(cpu=1.0),
        session="s",
        epoch=epoch,
        after=after,
        after_attempt=1 if after else 0,
    )


@pytest.fixture
async def worker(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Worker]:
    nc = await nats.connect(nats_server.url)
    node = Worker(nc, "n", NodeCapacity(cpus=1, memory_mb=1000), "127.0.0.1", work_dir=tmp_path)
    node.session = "s"
    yield node
    await nc.close()


def rejections(node: Worker) -> list[tuple[str, int, int]]:
    return [
        (e.task_id, e.attempt, e.placed_epoch) for e in node.outbox.pending if isinstance(e, AttemptRejected)
    ]


async def test_the_logs_placement_of_an_attempt_taken_from_a_deposed_leader_is_rejected(
    worker: Worker,
) -> None:
    worker._accept(item("a", epoch=1))  # the deposed leader's, waiting here, with its follower
    worker._accept(item("b", epoch=1, after="a"))
    assert [w.task_id for w in worker.waiting] == ["a"] and worker.follow.holds(("r", "b", 1))
    worker._accept(item("a", epoch=2))  # the log's own placement of attempt 1
    assert worker.waiting == [] and not worker.follow.holds(("r", "b", 1))  # its copy and chain go
    assert rejections(worker) == [("a", 1, 2)]
    worker._accept(item("a", epoch=2))  # sent again: a duplicate
    worker._accept(item("a", epoch=1))  # the deposed one's again: older, dropped
    assert rejections(worker) == [("a", 1, 2)] and worker.waiting == []
    # the follower's own placement by the log is taken (what the older one held was forgotten)
    worker._accept(item("b", epoch=2))
    assert [w.task_id for w in worker.waiting] == ["b"] and rejections(worker) == [("a", 1, 2)]


async def test_a_held_follower_of_an_older_leadership_gives_way_alike(worker: Worker) -> None:
    worker._accept(item("a", epoch=1))
    worker._accept(item("b", epoch=1, after="a"))
    worker._accept(item("b", epoch=2, after="a"))
    assert not worker.follow.holds(("r", "b", 1)) and worker.follow.follows(("r", "a", 1)) is False
    assert rejections(worker) == [("b", 1, 2)]
    assert [w.task_id for w in worker.waiting] == ["a"]  # what it followed stays


async def test_work_first_taken_from_a_head_that_named_no_leadership_is_never_rejected(
    worker: Worker,
) -> None:
    """An older head's work carries no epoch: the same attempt sent again from a newer head's log
    (with its placement's epoch) is that same placement, not a deposed one's."""
    worker._accept(item("a", epoch=0))
    worker._accept(item("a", epoch=3))
    assert rejections(worker) == [] and [w.task_id for w in worker.waiting] == ["a"]
