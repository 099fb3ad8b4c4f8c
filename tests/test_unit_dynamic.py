"""Dynamic runs in the controller's pure core and the read models' folds: appends are folded (or
refused) by one rule in both, a dynamic run stays open when its tasks are done and is not ended by
a failure, finalize ends it succeeded with its result, and a snapshot carries all of it."""

from __future__ import annotations

import msgspec

from maze.events.runs import RunCreated, RunFinalizeRequested, RunFinished, TaskAppended
from maze.head import snapshot
from maze.head.scheduler import Scheduler
from maze.projections.fold import create_run, fold_run_event
from tests.test_unit_scheduler import decide, fail, finished, items, joined, spec, succeed

RESULT = msgspec.msgpack.encode({"answer": 42})


def dynamic_core(max_tasks: int = 3) -> Scheduler:
    core = Scheduler(queue_factor=1.0, grace_ms=60_000)
    core.apply(joined(cpus=4.0))
    core.apply(
        RunCreated(run_id="d", workflow_id="w", at_ms=0, tasks=[], kind="dynamic", max_tasks=max_tasks)
    )
    return core


def appended(*specs: object) -> TaskAppended:
    return TaskAppended(run_id="d", at_ms=1, tasks=list(specs))  # type: ignore[arg-type]


def test_an_empty_dynamic_run_stays_open_and_places_appended_tasks_in_the_next_pass() -> None:
    core = dynamic_core()
    assert not finished(decide(core, 10)) and "d" in core.runs
    core.apply(appended(spec("a")))
    first = decide(core, 11)
    assert [i.task_id for i in items(first)] == ["a"]
    succeed(core, items(first)[0])
    assert not finished(decide(core, 12))  # every task done: still open
    # a task appended after its upstream succeeded reads the kept result and is ready at once
    core.apply(appended(spec("b", reads=("a",))))
    second = decide(core, 13)
    assert [i.task_id for i in items(second)] == ["b"]


def test_a_failure_does_not_end_a_dynamic_run_and_a_waiting_task_waits() -> None:
    core = dynamic_core()
    core.apply(appended(spec("a")))
    placed = items(decide(core, 10))
    core.apply(appended(spec("b", reads=("a",))))  # appended while `a` runs: it waits
    assert not items(decide(core, 11))
    fail(core, placed[0])
    assert not finished(decide(core, 12)) and core.runs["d"].tasks["b"].state == "pending"


def test_finalize_ends_it_succeeded_with_the_result_and_stops_running_attempts() -> None:
    core = dynamic_core()
    core.apply(appended(spec("a")))
    decide(core, 10)
    core.apply(RunFinalizeRequested(run_id="d", at_ms=20, result=RESULT))
    decision = decide(core, 21)
    end = finished(decision)
    assert [(e.state, e.result) for e in end] == [("succeeded", RESULT)]
    stopped = [e for e in decision.events if not isinstance(e, RunFinished)]
    assert [(e.task_id, e.error.error_type) for e in stopped] == [("a", "cancelled")]  # type: ignore[attr-defined]


def test_refused_appends_change_nothing_in_the_controller_nor_the_read_models() -> None:
    core = dynamic_core(max_tasks=2)
    created = RunCreated(run_id="d", workflow_id="w", at_ms=0, tasks=[], kind="dynamic", max_tasks=2)
    model = create_run(created, 1)
    events = [
        appended(spec("a")),
        appended(spec("x", reads=("nope",))),  # an unknown reference
        appended(spec("a")),  # a taken id
        appended(spec("b", after=("a",))),
        appended(spec("c")),  # past max_tasks
    ]
    for event in events:
        core.apply(event)
        fold_run_event(model, event)
    assert list(core.runs["d"].tasks) == list(model.tasks) == ["a", "b"]
    assert model.run.task_count == 2 and model.run.max_tasks == 2
    core.apply(RunFinished(run_id="d", at_ms=5, state="succeeded", result=RESULT))
    fold_run_event(model, RunFinished(run_id="d", at_ms=5, state="succeeded", result=RESULT))
    fold_run_event(model, appended(spec("late")))  # after the end: refused
    assert list(model.tasks) == ["a", "b"]
    assert '"result": {"answer": 42}' in (model.run.result_summary or "")


def test_a_snapshot_carries_a_dynamic_run() -> None:
    core = dynamic_core()
    core.apply(appended(spec("a")))
    placed = items(decide(core, 10))
    succeed(core, placed[0])
    core.apply(appended(spec("b", reads=("a",))))
    state = snapshot.decode(snapshot.encode(snapshot.capture(core, {})))
    restored = snapshot.restore(state, 1.0, 60_000, 5_000)
    assert snapshot.fingerprint(restored) == snapshot.fingerprint(core)
    run = restored.runs["d"]
    assert run.dynamic and run.max_tasks == 3 and run.tasks["a"].result is not None
    restored.apply(RunFinalizeRequested(run_id="d", at_ms=20, result=RESULT))
    assert run.finalize == RESULT
