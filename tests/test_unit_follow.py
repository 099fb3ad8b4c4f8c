"""The node's side of followers (maze/workers/follow.py): a follower runs as soon as the attempt
it follows succeeded, and what it reports is sent only once that success is stored as it is (in
order), dropped when it is not, and the next follower's gate closes with it; its inputs are
filled from the upstream's result."""

from __future__ import annotations

import asyncio

import msgspec

from maze.events.codec import encode_value
from maze.events.tasks import AttemptStarted, AttemptSucceeded
from maze.events.values import decode_map_raw
from maze.events.work import WorkItem
from maze.workers.follow import Followers, filled
from tests.test_dispatch import work

ONE, TWO = msgspec.msgpack.encode(1), msgspec.msgpack.encode(2)


def item(task_id: str, after: str = "", **inputs: bytes) -> WorkItem:
    """Work of attempt 1 of `task_id`; with `after`, a follower of attempt 1 of that task whose
    input `x` is its output `out`."""
    return msgspec.structs.replace(
        work(task_id, **inputs),
        after=after,
        after_attempt=1 if after else 0,
        after_inputs={"x": "out"} if after else {},
    )


def report(task_id: str) -> AttemptStarted:
    return AttemptStarted(run_id="r", task_id=task_id, attempt=1, node_id="n", at_ms=0)


def result(**values: bytes) -> bytes:
    return encode_value({k: msgspec.Raw(v) for k, v in values.items()})


def test_inputs_are_filled_from_the_upstream_result_and_a_missing_output_is_said() -> None:
    ready = filled(item("b", after="a", y=TWO), result(out=ONE, other=TWO))
    assert isinstance(ready, WorkItem) and not ready.after and ready.after_inputs == {}
    assert {k: bytes(v) for k, v in decode_map_raw(ready.inputs).items()} == {"x": ONE, "y": TWO}
    why = filled(item("b", after="a"), result(other=TWO))
    assert why == "input 'x' refers to output 'out' of task a, which returned only ['other']"


def test_reports_wait_for_the_gate_and_leave_in_order_or_not_at_all() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sent: list[tuple[str, object]] = []
        closed: list[tuple[str, str, int]] = []
        follow = Followers(lambda event, stored: sent.append((event.task_id, stored)), closed.append)  # type: ignore[attr-defined]
        for task_id, after in (("b", "a"), ("c", "b")):
            follow.hold(item(task_id, after=after))
        a_stored = loop.create_future()
        started = follow.start(("r", "a", 1), a_stored, result(out=ONE))
        assert started is not None and started[0].task_id == "b" and isinstance(started[1], WorkItem)
        b_stored = loop.create_future()
        follow.report(("r", "b", 1), report("b"))
        follow.report(("r", "b", 1), report("b"), b_stored)
        assert sent == []  # a's success is not stored yet
        started = follow.start(("r", "b", 1), b_stored, result(out=ONE))  # c runs at once too
        assert started is not None and started[0].task_id == "c"
        follow.report(("r", "c", 1), report("c"))
        a_stored.set_result(True)
        await asyncio.sleep(0)
        assert [t for t, _ in sent] == ["b", "b"]  # b's reports, in order; c waits for b's
        follow.ended(("r", "b", 1))
        b_stored.set_result(False)  # b's success was not stored as it is: c's reports never leave,
        await asyncio.sleep(0)  # and c, still running, is stopped
        assert [t for t, _ in sent] == ["b", "b"] and closed == [("r", "c", 1)]
        follow.ended(("r", "c", 1))
        assert follow.gates == {} and follow.gated == {}
        # a follower whose upstream's success was not stored: nothing of it leaves, and its own
        # success tells the next in line so
        follow.hold(item("e", after="d"))
        d_stored = loop.create_future()
        assert follow.start(("r", "d", 1), d_stored, result(out=ONE)) is not None
        d_stored.set_result(False)
        await asyncio.sleep(0)
        e_stored = loop.create_future()
        follow.report(("r", "e", 1), report("e"), e_stored)
        assert e_stored.result() is False and [t for t, _ in sent] == ["b", "b"]

    asyncio.run(main())


def test_a_report_after_the_gate_opened_never_overtakes_what_it_held() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sent: list[str] = []
        follow = Followers(lambda event, stored: sent.append(type(event).__name__), lambda key: None)
        follow.hold(item("b", after="a"))
        gate = loop.create_future()
        assert follow.start(("r", "a", 1), gate, result(out=ONE)) is not None
        follow.report(("r", "b", 1), report("b"))  # held
        gate.set_result(True)  # stored; its callback has not run yet
        follow.report(
            ("r", "b", 1),
            AttemptSucceeded(run_id="r", task_id="b", attempt=1, node_id="n", at_ms=1, result=b"\x80"),
        )
        assert sent == ["AttemptStarted", "AttemptSucceeded"]
        await asyncio.sleep(0)
        assert sent == ["AttemptStarted", "AttemptSucceeded"] and follow.gates == {}
        # held reports of a follower that ended before its gate's callback ran go at its end
        follow.hold(item("c", after="b"))
        gate = loop.create_future()
        assert follow.start(("r", "b", 1), gate, result(out=ONE)) is not None
        follow.report(("r", "c", 1), report("c"))
        gate.set_result(True)
        follow.ended(("r", "c", 1))
        assert sent[-1] == "AttemptStarted" and len(sent) == 3 and follow.gates == {}

    asyncio.run(main())


def test_a_follower_whose_work_comes_after_its_upstreams_success_starts_from_it() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        follow = Followers(lambda event, stored: None, lambda key: None)
        stored = loop.create_future()
        follow.note_success(("r", "a", 1), stored, result(out=ONE))
        assert follow.succeeded(("r", "a", 1)) == (stored, result(out=ONE))
        stored.set_result(False)
        assert follow.succeeded(("r", "a", 1)) is None  # not stored as it was: nothing follows it

    asyncio.run(main())


def test_dropping_a_chain_and_a_run() -> None:
    follow = Followers(lambda event, stored: None, lambda key: None)
    follow.hold(item("b", after="a"))
    follow.hold(item("c", after="b"))
    assert follow.follows(("r", "a", 1)) and follow.holds(("r", "c", 1))
    assert follow.drop_after(("r", "a", 1)) == [("r", "b", 1), ("r", "c", 1)]
    assert follow.held == {} and follow.after == {}
    follow.hold(item("b", after="a"))
    assert follow.drop_run("r") == [("r", "b", 1)] and follow.held == {}


def test_a_run_that_ended_voids_what_its_running_followers_would_report() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sent: list[str] = []
        follow = Followers(lambda event, stored: sent.append(event.task_id), lambda key: None)  # type: ignore[attr-defined]
        follow.hold(item("b", after="a"))
        gate = loop.create_future()
        assert follow.start(("r", "a", 1), gate, result(out=ONE)) is not None
        b_stored = loop.create_future()
        follow.report(("r", "b", 1), report("b"), b_stored)
        assert follow.void_run("other") == []
        assert follow.void_run("r") == [("r", "b", 1)]
        assert b_stored.result() is False
        gate.set_result(True)  # a's success stored after all: b's attempt is void all the same
        await asyncio.sleep(0)
        follow.report(("r", "b", 1), report("b"))
        follow.ended(("r", "b", 1))
        assert sent == [] and follow.gates == {} and follow.gated == {}

    asyncio.run(main())


def test_kept_successes_are_bounded_in_count_and_bytes() -> None:
    from maze.workers import follow as module

    async def main() -> None:
        loop = asyncio.get_running_loop()
        follow = Followers(lambda event, stored: None, lambda key: None)
        for i in range(module.RECENT_KEPT + 10):
            follow.note_success(("r", f"t{i}", 1), loop.create_future(), b"x")
        assert len(follow.recent) == module.RECENT_KEPT and follow.recent_bytes == module.RECENT_KEPT
        big = b"x" * (module.RECENT_BYTES // 2 + 1)
        follow.note_success(("r", "big1", 1), loop.create_future(), big)
        follow.note_success(("r", "big2", 1), loop.create_future(), big)
        assert list(follow.recent) == [("r", "big2", 1)] and follow.recent_bytes == len(big)

    asyncio.run(main())


def succeeded(task_id: str) -> AttemptSucceeded:
    return AttemptSucceeded(
        run_id="r", task_id=task_id, attempt=1, node_id="n", at_ms=1, result=result(out=ONE)
    )


def test_the_reports_behind_a_run_message_are_taken_in_chain_order_within_its_room() -> None:
    """A new run's first attempts (maze/api/early.py): what they and the followers behind their
    successes reported is taken, in order, for the run's message; what runs still, what is behind
    it, and what does not fit stay behind their gates, and leave once the message is stored."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sent: list[str] = []
        follow = Followers(lambda event, stored: sent.append(event.task_id), lambda key: None)  # type: ignore[attr-defined]
        gate: asyncio.Future[bool] = loop.create_future()
        follow.gate(("r", "a", 1), gate)  # a chain a -> b -> c, and x beside it, still running
        follow.gate(("r", "x", 1), gate)
        follow.hold(item("b", after="a"))
        follow.hold(item("c", after="b"))
        a_stored: asyncio.Future[bool] = loop.create_future()
        follow.report(("r", "a", 1), report("a"))
        follow.report(("r", "a", 1), succeeded("a"), a_stored)
        follow.ended(("r", "a", 1))
        assert follow.running_behind(gate)
        assert follow.start(("r", "a", 1), a_stored, result(out=ONE)) is not None
        b_stored: asyncio.Future[bool] = loop.create_future()
        follow.report(("r", "b", 1), report("b"))
        follow.report(("r", "b", 1), succeeded("b"), b_stored)
        follow.ended(("r", "b", 1))
        follow.report(("r", "x", 1), report("x"))  # x runs on; c (behind b) too
        assert follow.start(("r", "b", 1), b_stored, result(out=ONE)) is not None
        assert follow.running_behind(gate)
        taken, told = follow.take(gate, 10_000, lambda event: 100)
        assert [(type(e).__name__, e.task_id) for e in taken] == [  # type: ignore[attr-defined]
            ("AttemptStarted", "a"),
            ("AttemptSucceeded", "a"),
            ("AttemptStarted", "b"),
            ("AttemptSucceeded", "b"),
        ]
        assert told == [a_stored, b_stored]
        # the message is stored: x's held start leaves; c's reports leave once b's success is told
        gate.set_result(True)
        for future in told:
            future.set_result(True)
        await asyncio.sleep(0)
        assert sent == ["x"]
        follow.report(("r", "c", 1), report("c"))
        assert sent == ["x", "c"]
        # room for one attempt's reports only: the first is taken, what follows it stays
        gate2: asyncio.Future[bool] = loop.create_future()
        for task_id in ("d", "e"):
            follow.gate(("r", task_id, 1), gate2)
            follow.report(("r", task_id, 1), report(task_id))
            follow.ended(("r", task_id, 1))
        assert not follow.running_behind(gate2)
        taken, _ = follow.take(gate2, 150, lambda event: 100)
        assert [e.task_id for e in taken] == ["d"]  # type: ignore[attr-defined]
        gate2.set_result(False)  # not stored: what stayed behind is dropped
        await asyncio.sleep(0)
        assert sent == ["x", "c"]

    asyncio.run(main())


def test_a_closed_gate_closes_the_chain_behind_it_at_once_and_a_void_attempt_says_nothing() -> None:
    """The run's message was not stored: the attempt behind it and the follower behind its (not
    taken) success are stopped now, not a turn of the loop later (work the log sends for them
    meanwhile must find them forgotten); what a stopped attempt reports before it ends is dropped."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sent: list[str] = []
        closed: list[tuple[str, str, int]] = []
        follow = Followers(lambda event, stored: sent.append(event.task_id), closed.append)  # type: ignore[attr-defined]
        gate: asyncio.Future[bool] = loop.create_future()
        follow.gate(("r", "a", 1), gate)
        follow.hold(item("b", after="a"))
        follow.hold(item("c", after="b"))
        a_stored: asyncio.Future[bool] = loop.create_future()
        follow.report(("r", "a", 1), succeeded("a"), a_stored)
        follow.ended(("r", "a", 1))
        assert follow.start(("r", "a", 1), a_stored, result(out=ONE)) is not None  # b runs
        gate.set_result(False)
        follow.settle_now({gate})  # no await: everything is decided within this call
        assert a_stored.done() and not a_stored.result()
        assert closed == [("r", "b", 1)]
        # b's reply was already on its way: its start and success go nowhere
        b_stored: asyncio.Future[bool] = loop.create_future()
        follow.report(("r", "b", 1), report("b"))
        follow.report(("r", "b", 1), succeeded("b"), b_stored)
        assert b_stored.done() and not b_stored.result()
        follow.ended(("r", "b", 1))
        await asyncio.sleep(0)  # (the gates' own callbacks change nothing more)
        assert sent == [] and closed == [("r", "b", 1)]
        # b's key, run again later, reports as any attempt
        follow.report(("r", "b", 1), report("b"))
        assert sent == ["b"]

    asyncio.run(main())


def test_events_are_appended_to_a_message_under_each_list_header() -> None:
    from maze.events.codec import append_events

    for n in (0, 1, 14, 15, 16, 65_534, 65_535, 65_536):
        for k in (0, 1, 2):
            message = msgspec.msgpack.encode(list(range(n)))
            out = append_events(message, [msgspec.msgpack.encode(f"e{i}") for i in range(k)])
            assert msgspec.msgpack.decode(out) == [*range(n), *(f"e{i}" for i in range(k))], (n, k)
