"""Followers (maze/head/followers.py) in the controller's pure core: a chain placed with its head
on one node, holding one slot; put in force by each success; recorded lost and placed again when
the attempt they follow does not succeed; lost with their node; and what may not follow."""

from __future__ import annotations

import msgspec

from maze.events import values
from maze.events.nodes import NodeLost
from maze.events.specs import Resources, RetryPolicy, TaskError
from maze.events.tasks import AttemptFailed, AttemptLost, AttemptPlaced, RetryScheduled
from maze.head.followers import NOTHING
from maze.head.scheduler import Scheduler
from tests.test_unit_scheduler import (
    ONE,
    core_with,
    decide,
    fail,
    finished,
    items,
    joined,
    spec,
    succeed,
    succeed_events,
)


def chain(n: int, **kw: object) -> list:
    specs = [spec("t0", **kw)]  # type: ignore[arg-type]
    specs += [spec(f"t{i}", reads=(f"t{i - 1}",), **kw) for i in range(1, n)]  # type: ignore[arg-type]
    return specs


def committed(core: Scheduler) -> float:
    return core.placer.nodes["n"].committed.cpu


def test_a_chain_is_placed_at_once_on_one_node_holding_one_slot() -> None:
    core = core_with(*chain(4), cpus=4)
    decision = decide(core, 10)
    work = items(decision)
    assert [w.task_id for w in work] == ["t0", "t1", "t2", "t3"]
    assert [(w.after, w.after_attempt, w.after_inputs) for w in work] == [
        ("", 0, {}),
        ("t0", 1, {"in_t0": "x"}),
        ("t1", 1, {"in_t1": "x"}),
        ("t2", 1, {"in_t2": "x"}),
    ]
    placed = [e for e in decision.events if isinstance(e, AttemptPlaced)]
    assert [p.reason.startswith("follows") for p in placed] == [False, True, True, True]
    assert committed(core) == 1.0  # the chain holds one slot
    run = core.runs["r"]
    assert [run.tasks[f"t{i}"].state for i in range(4)] == ["queued"] * 4
    assert list(core.delivery.awaiting) == [("r", "t0", 1)]  # followers are not watched yet
    # each success puts the next in force: its own resources, watched until it starts
    succeed(core, work[0])
    assert core.placer.reservations[("r", "t1", 1)].resources == spec("t1").resources
    assert core.placer.reservations[("r", "t2", 1)].resources == NOTHING
    assert committed(core) == 1.0 and ("r", "t1", 1) in core.delivery.awaiting
    assert items(decide(core, 20)) == []  # nothing placed again
    for w in work[1:]:
        succeed(core, w)
    assert [e.state for e in finished(decide(core, 30))] == ["succeeded"]
    assert committed(core) == 0.0


def test_a_failed_attempt_voids_its_followers_which_come_again_with_its_retry() -> None:
    core = core_with(*chain(3, retry=RetryPolicy(max_retries=1, backoff_seconds=0)), cpus=4)
    work = items(decide(core, 10))
    fail(core, work[0])
    decision = decide(core, 20)
    assert [type(e) for e in decision.events] == [RetryScheduled]
    decision = decide(core, 30)  # the retry is placed: the stale followers lost, placed anew
    kinds = [(type(e).__name__, e.task_id, getattr(e, "attempt", None)) for e in decision.events]
    assert kinds == [
        ("AttemptPlaced", "t0", 2),
        ("AttemptLost", "t1", 1),
        ("AttemptPlaced", "t1", 2),
        ("AttemptLost", "t2", 1),
        ("AttemptPlaced", "t2", 2),
    ]
    run = core.runs["r"]
    assert run.tasks["t1"].requeues == 0 and run.tasks["t1"].failures == 0
    assert [w.after_attempt for w in items(decision)] == [0, 2, 2]
    assert committed(core) == 1.0


def test_a_run_that_fails_records_its_stale_followers_lost_first() -> None:
    core = core_with(*chain(3), cpus=4)
    work = items(decide(core, 10))
    fail(core, work[0])
    decision = decide(core, 20)
    assert [(type(e).__name__, getattr(e, "task_id", None)) for e in decision.events] == [
        ("AttemptLost", "t1"),
        ("AttemptLost", "t2"),
        ("RunFinished", None),
    ]
    assert core.runs == {} and committed(core) == 0.0


def test_followers_are_lost_with_their_node_and_not_placed_before_their_upstream() -> None:
    core = core_with(*chain(3), cpus=4)
    decide(core, 10)
    core.apply(NodeLost(node_id="n", session="s1", at_ms=11, reason="gone"))
    core.apply(joined(session="s2"))
    decision = decide(core, 20)
    lost = [e for e in decision.events if isinstance(e, AttemptLost)]
    assert sorted(e.task_id for e in lost) == ["t0", "t1", "t2"]
    decision = decide(core, 30)  # t0 again, its chain with it, on the new session
    placed = [e for e in decision.events if isinstance(e, AttemptPlaced)]
    assert [(p.task_id, p.attempt, p.session) for p in placed] == [
        ("t0", 2, "s2"),
        ("t1", 2, "s2"),
        ("t2", 2, "s2"),
    ]
    assert core.runs["r"].tasks["t1"].requeues == 0


def test_what_may_not_follow() -> None:
    from maze.events.nodes import NodeJoined
    from maze.events.runs import RunCreated
    from maze.events.specs import GpuInfo, NodeCapacity

    big = NodeCapacity(
        cpus=8,
        memory_mb=16_000,
        gpus=[GpuInfo(index=0, name="g", total_mem_mb=16_000, free_mem_mb=16_000)],
        sandbox=True,
        sandbox_limits="cgroup2",
    )
    gpu, boxed = Resources(cpu=1, gpu=1), Resources(cpu=1, sandbox=True)
    cases = {
        "more CPU": [spec("a"), spec("b", reads=("a",), res=Resources(cpu=2))],
        "two readers": [spec("a"), spec("b", reads=("a",)), spec("c", reads=("a",))],
        "another upstream": [spec("a"), spec("x"), spec("b", reads=("a", "x"))],
        "a GPU": [spec("a", res=gpu), spec("b", reads=("a",), res=gpu)],
        "a sandbox": [spec("a", res=boxed), spec("b", reads=("a",), res=boxed)],
        "an app": [spec("a"), msgspec.structs.replace(spec("b", reads=("a",)), task_type="app")],
    }
    for why, specs in cases.items():
        core = Scheduler(queue_factor=1.0, grace_ms=60_000)
        core.apply(NodeJoined(node_id="n", session="s1", at_ms=0, hostname="h", ip="127.0.0.1", capacity=big))
        core.apply(RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=specs))
        work = items(decide(core, 10))
        assert work and work[0].task_id == "a" and all(not w.after and not w.leads for w in work), why
    for kind in ("workspace", "dynamic"):
        core = Scheduler(queue_factor=1.0, grace_ms=60_000)
        core.apply(joined())
        extra = {"workspace": "f" * 64} if kind == "workspace" else {"kind": "dynamic", "max_tasks": 10}
        core.apply(RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=chain(2), **extra))  # type: ignore[arg-type]
        work = items(decide(core, 10))
        assert [w.task_id for w in work] == ["t0"], kind
    # a follower's other inputs travel in its work; only the upstream's are filled on the node
    core = core_with(spec("x"), spec("a", reads=("x",)), spec("b", reads=("a", "x")), cpus=4)
    work = items(decide(core, 10))
    assert [w.task_id for w in work] == ["x"]  # x has two readers: nothing follows it
    succeed(core, work[0])
    work = items(decide(core, 20))
    assert [(w.task_id, w.after, w.after_inputs, w.leads) for w in work] == [
        ("a", "", {}, True),
        ("b", "a", {"in_a": "x"}, False),
    ]
    inputs = values.decode_map_raw(work[1].inputs)
    assert set(inputs) == {"in_x"} and bytes(inputs["in_x"]) == ONE


def test_a_run_failing_elsewhere_records_every_follower_lost_and_tells_its_node() -> None:
    core = core_with(*chain(3), spec("z"), cpus=4)
    work = {w.task_id: w for w in items(decide(core, 10))}
    assert sorted(work) == ["t0", "t1", "t2", "z"]
    fail(core, work["z"])  # z fails for good while t0 runs with its chain held after it
    decision = decide(core, 20)
    assert [(type(e).__name__, getattr(e, "task_id", None)) for e in decision.events] == [
        ("AttemptLost", "t1"),
        ("AttemptLost", "t2"),
        ("RunFinished", None),
    ]
    [told] = decision.cancels["n"]
    assert told.run_id == "r" and told.held_only
    assert core.drop_held == {}


def test_a_follower_that_failed_before_its_upstream_waits_for_it() -> None:
    core = core_with(*chain(2, retry=RetryPolicy(max_retries=1, backoff_seconds=0)), cpus=4)
    work = items(decide(core, 10))
    run = core.runs["r"]
    core.apply(  # its code could not be stored (say): failed by the controller, retried
        AttemptFailed(
            run_id="r",
            task_id="t1",
            attempt=1,
            at_ms=11,
            error=TaskError(
                error_type="artifact_error",
                message="its code is not stored",
                retryable=True,
                origin="controller",
            ),
        )
    )
    assert [type(e) for e in decide(core, 12).events] == [RetryScheduled]
    assert run.tasks["t1"].state == "retry_wait" and items(decide(core, 100)) == []  # not before t0
    succeed(core, work[0])
    [again] = items(decide(core, 200))
    assert (again.task_id, again.attempt, again.after) == ("t1", 2, "")


def test_followers_fold_alike_live_replayed_and_from_a_snapshot() -> None:
    """Whatever a pass decided about followers is in the log: folding that log again, or restoring
    a snapshot of the live core, gives the same state (reservations held and in force, delivery)."""
    from maze.head import snapshot

    log: list = []

    def record(core: Scheduler, now: int) -> list:
        decision = core.decide(now)
        for event in decision.events:
            core.apply(event)
        log.extend(decision.events)
        return items(decision)

    from maze.events.runs import RunCreated

    core = Scheduler(queue_factor=1.0, grace_ms=60_000)
    for event in (
        joined(cpus=4.0),  # (a float, as a decoded snapshot has it: fingerprints compare bytes)
        RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=[*chain(4), spec("z")]),
    ):
        core.apply(event)
        log.append(event)
    work = {w.task_id: w for w in record(core, 10)}
    for event in succeed_events(work["t0"]) + succeed_events(work["z"]):
        core.apply(event)
        log.append(event)
    record(core, 20)  # t1 in force now, t2 and t3 still following
    replayed = Scheduler(queue_factor=1.0, grace_ms=60_000)
    for event in log:
        replayed.apply(event)
    restored = snapshot.restore(
        snapshot.decode(snapshot.encode(snapshot.capture(core, {}))), 1.0, 60_000, 5_000
    )
    assert snapshot.fingerprint(replayed) == snapshot.fingerprint(core) == snapshot.fingerprint(restored)
    assert core.placer.reservations[("r", "t1", 1)].resources == spec("t1").resources
    assert restored.placer.reservations[("r", "t2", 1)].resources == NOTHING
    assert ("r", "t1", 1) in restored.delivery.awaiting and ("r", "t2", 1) not in restored.delivery.awaiting
