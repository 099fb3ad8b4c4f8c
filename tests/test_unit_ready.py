"""Per-shape ready queues and the retry heap: pure, no NATS."""

from __future__ import annotations

from maze.events.specs import Resources
from maze.head.ready import SKIPPED, ReadyQueues
from maze.head.retry import RetryTimers

SMALL = Resources(cpu=1)
BIG = Resources(cpu=4)
GPU = Resources(cpu=1, gpu=1, gpu_mem=8000)


def _placed_in_order(ready: ReadyQueues, fits: dict[Resources, int]) -> list[str]:
    """Run one pass where each shape has room for `fits[shape]` tasks; returns what was placed."""
    placed: list[str] = []
    room = dict(fits)

    def try_place(key: tuple[str, str], shape: Resources) -> str | None:
        if room.get(shape, 0) <= 0:
            return f"no room for {shape}"
        room[shape] -= 1
        placed.append(key[1])
        return None

    ready.place(try_place)
    return placed


def test_fifo_within_a_shape_and_readiness_order_across_shapes() -> None:
    ready = ReadyQueues()
    for task, shape in [("a", SMALL), ("b", GPU), ("c", SMALL), ("d", BIG), ("e", GPU), ("f", SMALL)]:
        ready.add(("r", task), shape)
    assert _placed_in_order(ready, {SMALL: 9, GPU: 9, BIG: 9}) == ["a", "b", "c", "d", "e", "f"]
    assert len(ready) == 0 and ready.queues == {}


def test_a_shape_that_finds_no_node_does_not_block_the_others() -> None:
    ready = ReadyQueues()
    ready.add(("r", "big1"), BIG)
    ready.add(("r", "big2"), BIG)
    for i in range(3):
        ready.add(("r", f"s{i}"), SMALL)
    assert _placed_in_order(ready, {SMALL: 2}) == ["s0", "s1"]
    # one reason per shape, answered for every queued task of that shape
    assert ready.reason(("r", "big1")) == ready.reason(("r", "big2")) == f"no room for {BIG}"
    assert ready.reason(("r", "s2")) == f"no room for {SMALL}"
    assert ready.reason(("r", "s0")) is None  # placed: not queued any more
    assert ready.counts == {BIG: 2, SMALL: 1}
    # room again: the waiting big tasks go first of their shape, in order, and the reason is gone
    assert _placed_in_order(ready, {BIG: 1, SMALL: 1}) == ["big1", "s2"]
    assert ready.reason(("r", "big2")) == f"no room for {BIG}"
    assert _placed_in_order(ready, {BIG: 1}) == ["big2"]
    assert ready.reasons == {}


def test_a_pass_asks_once_per_shape_that_has_no_room_however_long_its_queue() -> None:
    ready = ReadyQueues()
    for i in range(10_000):
        ready.add(("r", f"t{i}"), SMALL)
    ready.add(("r", "g"), GPU)
    asked: list[tuple[str, str]] = []

    def nothing_fits(key: tuple[str, str], shape: Resources) -> str | None:
        asked.append(key)
        return "busy"

    ready.place(nothing_fits)
    assert asked == [("r", "t0"), ("r", "g")]


def test_skipped_tasks_are_dropped_and_the_shape_carries_on() -> None:
    ready = ReadyQueues()
    for task in ("gone", "ok1", "ok2"):
        ready.add(("r", task), SMALL)

    def try_place(key: tuple[str, str], shape: Resources) -> str | None:
        return SKIPPED if key[1] == "gone" else None

    ready.place(try_place)
    assert len(ready) == 0 and ready.reasons == {}


def test_lazy_deletion_and_requeue_go_to_the_back() -> None:
    ready = ReadyQueues()
    for task in ("a", "b", "c"):
        ready.add(("r", task), SMALL)
    ready.add(("r", "a"), SMALL)  # already queued: stays where it is
    ready.discard(("r", "a"))
    ready.add(("r", "a"), SMALL)  # queued again: behind b and c
    assert ("r", "a") in ready and len(ready) == 3
    assert _placed_in_order(ready, {SMALL: 9}) == ["b", "c", "a"]


def test_stale_entries_are_compacted() -> None:
    ready = ReadyQueues()
    ready.add(("r", "head"), SMALL)
    for i in range(1000):
        ready.add(("r", f"t{i}"), SMALL)
    for i in range(1000):
        ready.discard(("r", f"t{i}"))
    assert len(ready) == 1
    assert len(ready.queues[SMALL]) <= 64, "a queue of mostly deleted entries is rebuilt"
    assert [key for _, key in ready.sample(10)] == [("r", "head")]


def test_sample_is_bounded_and_covers_every_shape() -> None:
    ready = ReadyQueues()
    for i in range(5000):
        ready.add(("r", f"s{i}"), SMALL)
    ready.add(("r", "big"), BIG)
    sample = list(ready.sample(10))
    assert len(sample) == 10
    assert (BIG, ("r", "big")) in sample, "a lone task of another shape is not hidden behind a long queue"


def test_retry_timers_pop_in_due_order_and_skip_stale_entries() -> None:
    timers = RetryTimers()
    timers.schedule(("r", "late"), 3000, 2)
    timers.schedule(("r", "soon"), 1000, 2)
    timers.schedule(("r", "moved_on"), 1500, 2)
    timers.schedule(("r", "mid"), 2000, 3)
    assert timers.next_due() == 1000
    assert timers.pop_due(999, lambda key, attempt: True) == []
    waiting = lambda key, attempt: key[1] != "moved_on"  # noqa: E731
    assert timers.pop_due(2000, waiting) == [("r", "soon"), ("r", "mid")]
    assert timers.next_due() == 3000 and len(timers) == 1
    assert timers.pop_due(10_000, waiting) == [("r", "late")]
    assert timers.next_due() is None
