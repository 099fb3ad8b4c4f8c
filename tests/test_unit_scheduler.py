"""The controller's pure core (maze/head/scheduler.py) driven by events, without NATS: placement by
shape, chunked runs, retries, failures, freeing results, lost nodes."""

from __future__ import annotations

import typing
from types import SimpleNamespace

import msgspec

from maze.events import values
from maze.events.catalog import Event
from maze.events.nodes import NodeJoined, NodeLost
from maze.events.runs import RunCreated, RunFinished, TasksAdded
from maze.events.specs import InputRef, InputValue, NodeCapacity, Resources, RetryPolicy, TaskError, TaskSpec
from maze.events.tasks import (
    AttemptFailed,
    AttemptLost,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)
from maze.events.work import WorkItem
from maze.head import views
from maze.head.liveness import Liveness
from maze.head.scheduler import FOLD, Decision, Scheduler

ONE = msgspec.msgpack.encode(1)


def spec(
    task_id: str,
    reads: tuple[str, ...] = (),
    after: tuple[str, ...] = (),
    res: Resources | None = None,
    retry: RetryPolicy | None = None,
) -> TaskSpec:
    inputs: dict[str, InputRef | InputValue] = {f"in_{up}": InputRef(task_id=up, key="x") for up in reads}
    if not inputs:
        inputs["x"] = InputValue(data=ONE)
    return TaskSpec(
        task_id=task_id,
        name=task_id,
        func_name="f",
        func_hash="c" * 64,
        call_style="kwargs",
        inputs=inputs,
        outputs=None,
        resources=res or Resources(),
        retry=retry or RetryPolicy(),
        after=tuple(after),
    )


def joined(node_id: str = "n", cpus: float = 4, session: str = "s1") -> NodeJoined:
    return NodeJoined(
        node_id=node_id,
        session=session,
        at_ms=0,
        hostname="h",
        ip="127.0.0.1",
        capacity=NodeCapacity(cpus=cpus, memory_mb=16_000),
    )


def core_with(*specs: TaskSpec, cpus: float = 4, queue_factor: float = 1.0, run_id: str = "r") -> Scheduler:
    core = Scheduler(queue_factor=queue_factor, grace_ms=60_000)
    core.apply(joined(cpus=cpus))
    core.apply(RunCreated(run_id=run_id, workflow_id="w", at_ms=0, tasks=list(specs)))
    return core


def decide(core: Scheduler, now: int) -> Decision:
    """A pass, and its decisions folded back as if stored and delivered by the log at once."""
    decision = core.decide(now)
    for event in decision.events:
        core.apply(event)
    return decision


def items(decision: Decision) -> list[WorkItem]:
    return [item for node_items in decision.work.values() for item in node_items]


def placed_ids(decision: Decision) -> list[str]:
    return [item.task_id for item in items(decision)]


def succeed_events(item: WorkItem, result: dict[str, bytes] | None = None) -> list[Event]:
    """The start and success a node reports for `item` (its result {"x": 1} unless given)."""
    wire = {"x": ONE} if result is None else result
    return [
        AttemptStarted(run_id=item.run_id, task_id=item.task_id, attempt=item.attempt, node_id="n", at_ms=1),
        AttemptSucceeded(
            run_id=item.run_id,
            task_id=item.task_id,
            attempt=item.attempt,
            node_id="n",
            at_ms=2,
            result=msgspec.msgpack.encode({k: msgspec.Raw(v) for k, v in wire.items()}),
        ),
    ]


def succeed(core: Scheduler, item: WorkItem, result: dict[str, bytes] | None = None) -> None:
    for event in succeed_events(item, result):
        core.apply(event)


def fail(core: Scheduler, item: WorkItem, error_type: str = "user_code") -> None:
    error = TaskError(error_type=error_type, message="boom", retryable=True)
    core.apply(
        AttemptFailed(
            run_id=item.run_id, task_id=item.task_id, attempt=item.attempt, at_ms=3, error=error, node_id="n"
        )
    )


def finished(decision: Decision) -> list[RunFinished]:
    return [e for e in decision.events if isinstance(e, RunFinished)]


def test_every_event_kind_has_a_fold_step() -> None:
    assert set(FOLD) == set(typing.get_args(Event))


# ---- placement by shape ---------------------------------------------------------------------------
def test_a_task_no_node_can_hold_now_does_not_block_smaller_ones() -> None:
    hog = spec("hog", res=Resources(cpu=2))
    big = spec("big", res=Resources(cpu=4))
    smalls = [spec(f"s{i}") for i in range(4)]
    core = core_with(hog, big, *smalls)
    first = decide(core, 10)
    # hog (readied first) takes 2 of 4 CPUs; big cannot start, the small ones take the rest in order
    assert placed_ids(first) == ["hog", "s0", "s1"]
    assert [e.task_id for e in first.events if isinstance(e, AttemptPlaced)] == ["hog", "s0", "s1"]
    assert all(not i.func and i.func_hash == "c" * 64 for i in items(first)), "code travels by hash only"
    big_reason = core.pending_reason("r", "big") or ""
    assert "waiting for free capacity" in big_reason and "cpu=4" in big_reason
    assert "cpu=1" in (core.pending_reason("r", "s2") or "")
    assert core.pending_reason("r", "s3") == core.pending_reason("r", "s2"), "one reason per shape"
    assert core.pending_reason("r", "hog") is None
    # s0 ends: one CPU frees up, the next small task (FIFO) takes it, big still waits
    succeed(core, items(first)[1])
    assert placed_ids(decide(core, 11)) == ["s2"]
    assert core.pending_reason("r", "big") == big_reason


def test_queues_view_is_counts_and_a_bounded_sample() -> None:
    core = core_with(spec("hog", res=Resources(cpu=4)), *[spec(f"t{i}") for i in range(20_000)])
    decide(core, 10)
    ctl = SimpleNamespace(core=core, placer=core.placer, liveness=Liveness(10))
    view = views.queues(ctl)  # type: ignore[arg-type]
    cls = views.resource_class(Resources(cpu=1))
    assert view["by_resource_class"][cls]["pending"] == 20_000
    assert "waiting for free capacity" in view["by_resource_class"][cls]["reason"]
    assert view["by_resource_class"][views.resource_class(Resources(cpu=4))]["placed"] == 1
    assert view["totals"]["pending"] == 20_000 and view["totals"]["placed"] == 1
    assert 0 < len(view["pending"]) <= views.SAMPLE
    assert view["pending"][0]["task_id"] == "t0" and "waiting" in view["pending"][0]["reason"]


# ---- chunked runs -----------------------------------------------------------------------------------
def _chunked(run_id: str = "wide", at_ms: int = 1_000) -> tuple[RunCreated, list[TasksAdded]]:
    specs = [spec(f"t{i}") for i in range(5)]
    created = RunCreated(run_id=run_id, workflow_id="w", at_ms=at_ms, tasks=specs[:2], task_count=5, chunks=3)
    added = [
        TasksAdded(run_id=run_id, chunk=1, at_ms=at_ms, tasks=specs[2:4]),
        TasksAdded(run_id=run_id, chunk=2, at_ms=at_ms, tasks=specs[4:]),
    ]
    return created, added


def test_a_chunked_run_starts_when_every_chunk_is_in_whatever_their_order() -> None:
    core = Scheduler(queue_factor=4)
    core.apply(joined())
    created, (one, two) = _chunked()
    core.apply(created)
    core.apply(two)
    core.apply(two)  # a redelivered chunk changes nothing
    assert decide(core, 2_000).events == [] and "wide" not in core.runs
    core.apply(one)
    assert list(core.runs["wide"].tasks) == [f"t{i}" for i in range(5)], "tasks in chunk order"
    assert placed_ids(decide(core, 2_001)) == [f"t{i}" for i in range(5)]
    core.apply(one)  # a late duplicate of a chunk of a started run
    core.apply(created)  # and of its run.created
    assert len(core.runs["wide"].tasks) == 5 and decide(core, 2_002).work == {}


def test_a_run_whose_chunks_never_all_arrive_fails_after_the_grace_period() -> None:
    core = Scheduler(grace_ms=60_000)
    core.apply(joined())
    created, (one, two) = _chunked(at_ms=1_000)
    core.apply(created)
    core.apply(two)
    assert decide(core, 61_000).events == [], "not before the grace period is over"
    decision = decide(core, 61_001)
    [ended] = finished(decision)
    assert decision.events == [ended]
    assert ended.state == "failed" and ended.error is not None
    assert ended.error.error_type == "incomplete_submission" and ended.error.origin == "controller"
    assert "only 3 of 5 tasks were recorded" in ended.error.message
    assert "wide" in core.done_runs and "wide" not in core.intake
    core.apply(one)  # the missing chunk, too late: the run stays ended
    assert "wide" not in core.runs and decide(core, 61_002).events == []


def test_a_run_whose_chunks_hold_the_wrong_number_of_tasks_fails() -> None:
    core = Scheduler()
    core.apply(RunCreated(run_id="odd", workflow_id="w", at_ms=0, tasks=[spec("a")], task_count=2))
    [ended] = finished(decide(core, 1))
    assert ended.error is not None and ended.error.error_type == "incomplete_submission"
    assert "odd" in core.done_runs


# ---- failures, retries, completion -------------------------------------------------------------
def test_a_retry_waits_out_its_backoff_in_the_heap() -> None:
    core = core_with(spec("a", retry=RetryPolicy(max_retries=1, backoff_seconds=2.0)))
    [first] = items(decide(core, 1_000))
    fail(core, first)
    decision = decide(core, 1_000)
    [retry] = [e for e in decision.events if isinstance(e, RetryScheduled)]
    assert (retry.next_attempt, retry.delay_ms) == (2, 2_000) and decision.work == {}
    assert core.next_wakeup() == 3_000
    assert decide(core, 2_999).work == {}
    [second] = items(decide(core, 3_000))
    assert second.attempt == 2
    fail(core, second)  # the budget is spent: the run fails with this task's error
    [ended] = finished(decide(core, 3_001))
    assert ended.state == "failed" and ended.failed_task_id == "a"
    assert ended.error is not None and ended.error.error_type == "user_code"


def test_a_lost_node_gives_up_its_attempts_started_ones_as_failures() -> None:
    core = core_with(spec("a"), spec("b"))
    first = {i.task_id: i for i in items(decide(core, 1))}
    assert core.placer.orphans == {}, "nothing to look at while membership is unchanged"
    core.apply(AttemptStarted(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=2))  # b never starts
    core.apply(NodeLost(node_id="n", session="s1", at_ms=2, reason="heartbeat_timeout"))
    core.apply(joined(session="s2"))
    decision = decide(core, 3)
    lost = [e for e in decision.events if isinstance(e, AttemptLost)]
    assert sorted((e.task_id, e.attempt, e.session) for e in lost) == [("a", 1, "s1"), ("b", 1, "s1")]
    assert items(decision) == [], "nothing is placed again before the losses are in the log"
    run = core.runs["r"]
    # b had not started: back to pending, no failure counted; a had: a node_lost failure
    assert (run.tasks["b"].state, run.tasks["b"].failures) == ("pending", 0)
    assert (run.tasks["a"].state, run.tasks["a"].failures) == ("failed", 1)
    assert run.tasks["a"].error is not None and run.tasks["a"].error.error_type == "node_lost"
    after = decide(core, 4)
    assert [(i.task_id, i.attempt, i.session) for i in items(after)] == [("b", 2, "s2")]
    [retry] = [e for e in after.events if isinstance(e, RetryScheduled)]
    assert retry.task_id == "a" and retry.delay_ms == 0
    assert [(i.task_id, i.attempt) for i in items(decide(core, 5))] == [("a", 2)]
    assert core.placer.orphans == {} and first["a"].attempt == 1


def test_a_task_no_node_will_start_backs_off_then_fails_instead_of_looping() -> None:
    """A rejection uses no retry, but placements that keep coming back unstarted are bounded: the
    first is placed again at once, then each waits a doubling backoff (recorded, with why), and
    after MAX_REQUEUES in a row the task fails with resource_unavailable."""
    from maze.events.tasks import AttemptRejected
    from maze.head.scheduler import MAX_REQUEUES, requeue_delay_ms

    core = core_with(spec("g"))
    now = 1_000
    [item] = items(decide(core, now))
    delays = []
    for n in range(1, MAX_REQUEUES + 2):
        core.apply(
            AttemptRejected(
                run_id="r", task_id="g", attempt=item.attempt, node_id="n", at_ms=now, reason="no gpu"
            )
        )
        assert core.runs["r"].tasks["g"].failures == 0, "a rejection is no failure"
        decision = decide(core, now)
        if n == 1:
            [item] = items(decision)  # placed again at once
            continue
        if n > MAX_REQUEUES:
            [failed] = [e for e in decision.events if isinstance(e, AttemptFailed)]
            assert failed.error.error_type == "resource_unavailable"
            assert f"placed {n} times in a row" in failed.error.message and "no gpu" in failed.error.message
            [ended] = finished(decide(core, now))
            assert ended.state == "failed" and ended.failed_task_id == "g"
            break
        [retry] = [e for e in decision.events if isinstance(e, RetryScheduled)]
        assert items(decision) == [] and retry.reason.startswith("requeued: attempt")
        assert retry.delay_ms == requeue_delay_ms(n)
        assert core.runs["r"].tasks["g"].state == "retry_wait"
        delays.append(retry.delay_ms)
        assert items(decide(core, now + retry.delay_ms - 1)) == [], "not before its backoff"
        now += retry.delay_ms
        [item] = items(decide(core, now))
    assert delays[:3] == [250, 500, 1_000] and max(delays) == 10_000


def test_a_start_resets_the_count_of_unstarted_placements() -> None:
    from maze.events.tasks import AttemptRejected

    core = core_with(spec("g", retry=RetryPolicy(max_retries=1)))
    [item] = items(decide(core, 1))
    core.apply(AttemptRejected(run_id="r", task_id="g", attempt=1, node_id="n", at_ms=1, reason="x"))
    [item] = items(decide(core, 2))
    core.apply(AttemptStarted(run_id="r", task_id="g", attempt=item.attempt, node_id="n", at_ms=3))
    assert core.runs["r"].tasks["g"].requeues == 0
    fail(core, item)  # a failure and its retry: nothing to do with requeues
    decide(core, 4)
    [item] = items(decide(core, 5))
    core.apply(
        AttemptRejected(run_id="r", task_id="g", attempt=item.attempt, node_id="n", at_ms=6, reason="x")
    )
    assert [i.attempt for i in items(decide(core, 7))] == [item.attempt + 1], "the first in a row: at once"


def test_forgetting_many_decisions_walks_each_run_once(monkeypatch: typing.Any) -> None:
    core = core_with(*[spec(f"t{i}") for i in range(200)], cpus=400)
    decision = core.decide(1)
    assert len(items(decision)) == 200
    walks: list[str] = []
    original = Scheduler._requeue
    monkeypatch.setattr(
        Scheduler, "_requeue", lambda self, run_id: (walks.append(run_id), original(self, run_id))
    )
    core.forget(decision)
    assert walks == ["r"]
    assert sorted(placed_ids(core.decide(2))) == sorted(f"t{i}" for i in range(200)), "decided again"


def test_a_run_broken_while_deciding_stays_out_of_the_folded_state_until_its_end_is_folded() -> None:
    from maze.head.snapshot import fingerprint

    core = core_with(spec("a"))
    replica = core_with(spec("a"))  # the same log, folded by a restarted controller
    core.break_run("r", "boom while deciding", decided=True)
    assert fingerprint(core) == fingerprint(replica), "a decision is not state"
    [ended] = finished(core.decide(1))
    assert ended.error is not None and "boom while deciding" in ended.error.message
    core.apply(ended)
    replica.apply(ended)
    assert fingerprint(core) == fingerprint(replica)
    assert core.inflight.broken == {}


def test_a_stray_event_of_a_run_never_seen_ends_nothing() -> None:
    core = core_with(spec("a"))
    core.break_run("run_long_gone", "a malformed event")  # e.g. a run older than the ids remembered
    assert finished(core.decide(1)) == []
    assert "run_long_gone" not in core.broken


def test_completion_by_counter() -> None:
    core = core_with(spec("a"), spec("b", reads=("a",), res=Resources(cpu=2)))  # b does not follow a
    [a] = items(decide(core, 1))
    succeed(core, a)
    decision = decide(core, 2)
    assert finished(decision) == []
    [b] = items(decision)
    succeed(core, b)
    [ended] = finished(decide(core, 3))
    assert ended.state == "succeeded" and "r" in core.done_runs and core.runs == {}


# ---- values -----------------------------------------------------------------------------------------
def test_results_travel_raw_and_are_freed_once_every_reader_succeeded() -> None:
    core = core_with(
        spec("a"), spec("b", reads=("a",)), spec("c", reads=("a",)), spec("d", after=("a",)), queue_factor=4
    )
    run = core.runs["r"]
    # a value the head must not decode: a pickle extension whose bytes are no valid pickle
    opaque = values.wire_from_content("pickle", b"\x00 not a pickle", "mod.Thing")
    [a] = items(decide(core, 1))
    succeed(core, a, {"x": opaque, "unused": ONE})
    assert run.tasks["a"].result == {"x": opaque, "unused": ONE}
    downstream = {i.task_id: i for i in items(decide(core, 2))}
    assert sorted(downstream) == ["b", "c", "d"]
    assert bytes(values.decode_map_raw(downstream["b"].inputs)["in_a"]) == opaque, "embedded as is"
    succeed(core, downstream["d"])  # an ordering-only edge does not read a's result
    succeed(core, downstream["b"])
    assert run.tasks["a"].result is not None, "c may still need it (for a retry, too)"
    succeed(core, downstream["c"])
    assert run.tasks["a"].result is None
    assert run.tasks["b"].result is None and run.tasks["d"].result is None, "no readers: never kept"


def test_a_missing_output_key_fails_the_attempt_with_invalid_input() -> None:
    # (a follower's inputs are filled on its node, which fails it alike: tests/test_followers.py)
    core = core_with(spec("a"), spec("b", reads=("a",), res=Resources(cpu=2)))
    [a] = items(decide(core, 1))
    succeed(core, a, {"y": ONE})
    decision = decide(core, 2)
    assert decision.work == {}
    [failed] = [e for e in decision.events if isinstance(e, AttemptFailed)]
    assert failed.task_id == "b" and failed.error.error_type == "invalid_input"
    assert "returned only ['y']" in failed.error.message
    [ended] = finished(decide(core, 3))
    assert ended.state == "failed" and ended.failed_task_id == "b"


def test_a_gathered_input_waits_for_every_reference_and_travels_as_slots_and_a_template() -> None:
    from maze.events.gather import assemble
    from maze.events.specs import InputGather

    parts = InputGather(
        items=(
            InputRef(task_id="a", key="x"),
            InputValue(data=msgspec.msgpack.encode("lit")),
            InputRef("b", "x"),
        ),
    )
    named = InputGather(items=(InputRef("b", "x"), InputGather(items=(InputRef("a", "x"),))), keys=("k", 3))
    fan_in = msgspec.structs.replace(spec("c"), inputs={"parts": parts, "named": named})
    core = core_with(spec("a"), spec("b"), fan_in, cpus=4.0)  # (a float, as a decoded snapshot has it)
    first = {i.task_id: i for i in items(decide(core, 1))}
    assert sorted(first) == ["a", "b"], "c waits for both"
    succeed(core, first["a"], {"x": msgspec.msgpack.encode("A")})
    assert items(decide(core, 2)) == []
    succeed(core, first["b"], {"x": msgspec.msgpack.encode("B")})
    [c] = items(decide(core, 3))
    wires = values.decode_map_raw(c.inputs)
    assert sorted(wires) == sorted(["parts\x000", "parts\x001", "parts\x002", "named\x000", "named\x001"])
    decoded = {key: msgspec.msgpack.decode(raw) for key, raw in wires.items()}
    assert assemble(c.gathers, decoded) == {"parts": ["A", "lit", "B"], "named": {"k": "B", 3: ["A"]}}
    # a snapshot of a run holding gathered inputs restores the same state and the same work
    from maze.head.snapshot import capture, decode, encode, fingerprint, restore

    again = restore(decode(encode(capture(core, {}))), 1.0, 60_000, 5_000)
    assert fingerprint(again) == fingerprint(core)
    assert again.work_from_log(c.key) == core.work_from_log(c.key) is not None
    # a gathered reference to an output its task did not return: invalid_input naming the item
    only_a = InputGather(items=(InputValue(data=ONE), InputRef(task_id="a", key="x")))
    core = core_with(spec("a"), msgspec.structs.replace(spec("c"), inputs={"parts": only_a}))
    [a] = items(decide(core, 1))
    succeed(core, a, {"y": ONE})
    [failed] = [e for e in decide(core, 2).events if isinstance(e, AttemptFailed)]
    assert "input 'parts[1]' refers to output 'x'" in failed.error.message


def test_a_run_with_inline_code_asks_for_it_in_the_blob_store() -> None:
    core = Scheduler()
    core.apply(joined())
    core.apply(
        RunCreated(run_id="old", workflow_id="w", at_ms=0, tasks=[spec("a")], functions={"c" * 64: b"code"})
    )
    decision = decide(core, 1)
    assert decision.code == {"c" * 64: b"code"}
    assert [i.func for i in items(decision)] == [b""]


def test_an_unsendable_attempt_fails_for_good() -> None:
    core = core_with(spec("a", retry=RetryPolicy(max_retries=3)))
    [a] = items(decide(core, 1))
    error = TaskError(error_type="payload_too_large", message="too big", origin="controller")
    failed = core.fail_work(a, error, 1)
    core.apply(failed)
    assert failed.attempt == a.attempt and core.placer.reservations == {}
    [ended] = finished(decide(core, 2))
    assert ended.error is not None and ended.error.error_type == "payload_too_large", "never retried"


def test_an_upstream_with_100000_output_keys_gives_a_short_invalid_input_error() -> None:
    """The error names a few of the keys, not all: listing them all made the controller's own
    event too large to store, and every pass after it failed the same way."""
    from maze.events.fit import make_fit

    core = core_with(spec("a"), spec("b", reads=("a",), res=Resources(cpu=2)))
    [a] = items(decide(core, 1))
    succeed(core, a, {f"k{i:06d}": ONE for i in range(100_000)})
    [failed] = [e for e in decide(core, 2).events if isinstance(e, AttemptFailed)]
    assert "'k000000'" in failed.error.message and "(99980 more)" in failed.error.message
    assert len(failed.error.message) < 1000
    [ended] = finished(decide(core, 3))
    huge = msgspec.structs.replace(ended, error=TaskError(error_type="x", message="m" * 2_000_000))
    [fitted] = make_fit([huge], budget=64 * 1024)
    assert isinstance(fitted, RunFinished) and len(fitted.error.message) < 5000  # type: ignore[union-attr]


# ---- placements made at submit ---------------------------------------------------------------------
def test_placements_made_at_submit_fold_as_the_first_pass_would_have_made_them() -> None:
    from maze.head.snapshot import fingerprint

    early, usual = Scheduler(queue_factor=1.0), Scheduler(queue_factor=1.0)
    for core in (early, usual):
        core.apply(joined(cpus=2))
    created = RunCreated(
        run_id="r", workflow_id="w", at_ms=0, tasks=[spec("x"), spec("y"), spec("z", reads=("x",))]
    )
    decision = early.place_new_run(created, 5)
    # z follows x (maze/head/followers.py): placed with it, at submit too
    assert decision is not None and [e.task_id for e in decision.events] == ["x", "z", "y"]
    assert "r" not in early.runs, "nothing of the run is state before its message is folded"
    for event in [created, *decision.events]:  # one message: run.created and its placements
        early.apply(event)
    usual.apply(created)
    for event in usual.decide(5).events:
        usual.apply(event)
    assert fingerprint(early) == fingerprint(usual)
    assert early.decide(6).events == [] and len(early.inflight) == 0, "nothing is placed twice"


def test_no_placement_at_submit_ahead_of_tasks_already_waiting() -> None:
    core = core_with(spec("hog", res=Resources(cpu=4)), spec("waits", res=Resources(cpu=4)), cpus=4)
    decide(core, 1)  # hog runs, waits waits
    created = RunCreated(run_id="r2", workflow_id="w", at_ms=2, tasks=[spec("small")])
    assert core.place_new_run(created, 2) is None, "what waits goes first"
    again = RunCreated(run_id="r", workflow_id="w", at_ms=2, tasks=[spec("small")])
    assert Scheduler().place_new_run(again, 2) is None, "no node: nothing to place"


def test_one_submit_decision_per_run_and_nothing_held_once_it_settles() -> None:
    """Two submits of one run (a client's retry) racing before the first is folded: only the first
    places; whatever the outcome (stored and folded, or forgotten), no capacity stays held."""
    core = Scheduler(queue_factor=1.0)
    core.apply(joined(cpus=2))
    created = RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=[spec("x")])
    first = core.place_new_run(created, 1)
    assert first is not None
    assert core.place_new_run(created, 1) is None, "the same run is being submitted already"
    node = core.placer.nodes["n"]
    assert node.intended.cpu == 1.0
    for event in [created, *first.events]:  # stored and folded
        core.apply(event)
    assert node.intended.cpu == 0.0 and core.submitting == {}
    # a run whose message was never stored: forgotten, then decided again by a later submit
    other = RunCreated(run_id="r2", workflow_id="w", at_ms=0, tasks=[spec("y")])
    decision = core.place_new_run(other, 2)
    assert decision is not None
    core.forget(decision)
    assert node.intended.cpu == 0.0 and core.submitting == {}
    assert core.place_new_run(other, 3) is not None


def test_an_intent_decided_again_replaces_the_old_one() -> None:
    from maze.head.placer import Placement

    core = Scheduler()
    core.apply(joined(cpus=4))
    choice = Placement(node_id="n", session="s1", gpus=[], reason="test")
    core.placer.intend(("r", "t", 1), choice, Resources(cpu=1))
    core.placer.intend(("r", "t", 1), choice, Resources(cpu=1))
    assert core.placer.nodes["n"].intended.cpu == 1.0
    core.placer.forget_intent(("r", "t", 1))
    assert core.placer.nodes["n"].intended.cpu == 0.0


# ---- leadership --------------------------------------------------------------------------------
def test_a_decision_of_an_older_leadership_is_refused_and_counted() -> None:
    from maze.events.runs import LeaderElected

    core = core_with(spec("a"), spec("b"))
    core.apply(LeaderElected(head_id="h1", epoch=1, at_ms=0))
    [a, b] = items(decide(core, 1))
    core.apply(LeaderElected(head_id="h2", epoch=2, at_ms=2))
    # the deposed leader (epoch 1) ends the run late: refused, the run goes on
    core.apply(RunFinished(run_id="r", at_ms=3, state="failed", epoch=1))
    assert core.fenced == 1 and "r" in core.runs
    # a decision of the current leadership, and one made before leases (epoch 0), are folded
    succeed(core, a)
    succeed(core, b)
    core.apply(RunFinished(run_id="r", at_ms=4, state="succeeded", epoch=2))
    assert "r" not in core.runs and core.fenced == 1
    assert (core.epoch, core.leader) == (2, "h2")
    core.apply(LeaderElected(head_id="h1", epoch=1, at_ms=5))  # an old election read late
    assert (core.epoch, core.leader) == (2, "h2")


def test_a_node_event_that_cannot_be_folded_is_skipped_loudly(monkeypatch: typing.Any) -> None:
    core = Scheduler()

    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(core.placer, "node_joined", broken)
    core.apply(joined())
    assert core.fold_errors == 1


def test_a_cancel_ends_every_active_attempt_then_the_run_and_nothing_starts_after() -> None:
    from maze.events.runs import RunCancelRequested

    core = core_with(spec("a"), spec("b"), spec("c"), spec("d", reads=("a",)), cpus=2)
    first = decide(core, 1)  # a and b placed (2 CPUs), d with a as its follower; c waits
    placed = {e.task_id for e in first.events if isinstance(e, AttemptPlaced)}
    assert placed == {"a", "b", "d"}
    core.apply(AttemptStarted(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=2))
    core.apply(RunCancelRequested(run_id="r", at_ms=3, reason="stop"))
    decision = decide(core, 4)
    ended = {e.task_id: e.error for e in decision.events if isinstance(e, AttemptFailed)}
    assert set(ended) == {"a", "b", "d"}, "the running and the queued attempts end; c never started"
    assert all(err.error_type == "cancelled" and err.origin == "controller" for err in ended.values())
    (finished,) = [e for e in decision.events if isinstance(e, RunFinished)]
    assert finished.state == "cancelled" and "stop" in (finished.error.message if finished.error else "")
    assert not [e for e in decision.events if isinstance(e, AttemptPlaced)], "nothing placed after"
    assert "r" not in core.runs and core.done_runs["r"] == "cancelled"
    assert core.placer.reservations == {}, "no reservation outlives the run"
    # a node that starts an attempt of it afterwards is told again
    core.apply(AttemptStarted(run_id="r", task_id="b", attempt=1, node_id="n", at_ms=5))
    assert decide(core, 6).cancels == {}, "not live yet: a replay tells nobody"
    core.went_live(7)
    core.apply(AttemptStarted(run_id="r", task_id="b", attempt=1, node_id="n", at_ms=8))
    assert [c.run_id for c in decide(core, 9).cancels["n"]] == ["r"]


def test_a_cancel_waits_for_a_placement_in_flight_and_a_run_timeout_ends_it_timed_out() -> None:
    from maze.events.runs import RunCancelRequested

    core = core_with(spec("a"))
    in_flight = core.decide(1)  # placed, not folded back yet
    core.apply(RunCancelRequested(run_id="r", at_ms=2, reason=""))
    assert core.decide(3).events == [], "decided once the placement in flight is folded"
    for event in in_flight.events:
        core.apply(event)
    decision = decide(core, 4)
    assert [type(e).__name__ for e in decision.events] == ["AttemptFailed", "RunFinished"]

    timed = Scheduler(queue_factor=1.0, grace_ms=60_000)
    timed.apply(joined())
    timed.apply(RunCreated(run_id="t", workflow_id="w", at_ms=1_000, tasks=[spec("a")], timeout_seconds=2.0))
    decide(timed, 1_001)
    assert timed.next_wakeup() == 3_000, "woken at the run's deadline"
    assert not [e for e in decide(timed, 2_999).events if isinstance(e, RunFinished)]
    decision = decide(timed, 3_000)
    (finished,) = [e for e in decision.events if isinstance(e, RunFinished)]
    assert finished.state == "timed_out" and finished.error is not None
    assert finished.error.error_type == "timeout" and "2s" in finished.error.message


def test_resource_unavailable_named_in_retry_on_is_retried_with_a_fresh_count_of_placements() -> None:
    from maze.events.tasks import AttemptRejected
    from maze.head.scheduler import MAX_REQUEUES

    core = core_with(spec("g", retry=RetryPolicy(max_retries=1, retry_on=("resource_unavailable",))))
    now = 1_000

    def reject(item: WorkItem) -> Decision:
        core.apply(
            AttemptRejected(run_id="r", task_id="g", attempt=item.attempt, node_id="n", at_ms=now, reason="x")
        )
        return decide(core, now)

    [item] = items(decide(core, now))
    for _ in range(MAX_REQUEUES):  # rejected again and again: placed at once, then after backoffs
        decision = reject(item)
        for retry in (e for e in decision.events if isinstance(e, RetryScheduled)):
            now += retry.delay_ms
            decision = decide(core, now)
        [item] = items(decision)
    [failed] = [e for e in reject(item).events if isinstance(e, AttemptFailed)]
    assert failed.error.error_type == "resource_unavailable"
    decision = decide(core, now)  # the failure folded: retry_on names it, so a retry, not the end
    assert not finished(decision)
    [retry] = [e for e in decision.events if isinstance(e, RetryScheduled)]
    assert retry.reason == "resource_unavailable" and core.runs["r"].tasks["g"].requeues == 0
    now += retry.delay_ms
    [item] = items(decide(core, now))
    assert [i.attempt for i in items(reject(item))] == [item.attempt + 1], "a fresh count: again at once"


def test_a_rejection_after_the_start_keeps_the_attempt_and_its_node_loss_still_ends_it() -> None:
    """The start the log took first stands (a node rejecting the log's placement after it reported
    a deposed leader's copy of the same attempt): the reservation is kept, nothing is placed again,
    and when the node is lost the attempt is still given up (not left running for ever)."""
    core = core_with(spec("a"))
    [item] = items(decide(core, 1))
    core.apply(AttemptStarted(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=2))
    core.apply(
        AttemptRejected(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=3, reason="x", placed_epoch=2)
    )
    assert core.runs["r"].tasks["a"].state == "running"
    assert (item.run_id, item.task_id, 1) in core.placer.reservations
    assert items(decide(core, 4)) == []
    core.apply(NodeLost(node_id="n", session="s1", at_ms=5, reason="heartbeat_timeout"))
    core.apply(joined(session="s2"))
    lost = [e for e in decide(core, 6).events if isinstance(e, AttemptLost)]
    assert [(e.task_id, e.attempt) for e in lost] == [("a", 1)]
    assert core.runs["r"].tasks["a"].state == "failed"
