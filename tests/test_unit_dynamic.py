"""Dynamic runs in the controller's pure core and the read models' folds: appends are folded (or
refused) by one rule in both, a dynamic run stays open when its tasks are done and is not ended by
a failure, finalize ends it succeeded with its result, and a snapshot carries all of it."""

from __future__ import annotations

import json

import msgspec

from maze.events.runs import RunCancelRequested, RunCreated, RunFinalizeRequested, RunFinished, TaskAppended
from maze.events.specs import Resources
from maze.events.tasks import AttemptFailed
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
    assert json.loads(model.run.result_summary or "{}")["result"] == {"answer": 42}


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


# ---- placements that travel with the append (POST /runs/{id}/tasks) ------------------------------
def test_placements_made_with_an_append_fold_to_what_the_next_pass_would_decide() -> None:
    """A task whose upstream has succeeded is placed with its append, in one message; one whose
    upstream is appended with it (or still runs) waits for the ordinary passes. Either way the
    folded state is the one the usual route (fold the append, then a pass) reaches."""
    from maze.head.snapshot import fingerprint

    early, usual = dynamic_core(max_tasks=5), dynamic_core(max_tasks=5)
    for core in (early, usual):
        core.apply(appended(spec("a")))
        succeed(core, items(decide(core, 10))[0])
        decide(core, 11)
    tasks = [spec("b", reads=("a",)), spec("c"), spec("d", reads=("c",))]
    decision = early.place_appended("d", tasks, 12)
    assert decision is not None and [e.task_id for e in decision.events] == ["b", "c"]  # type: ignore[attr-defined]
    assert "b" not in early.runs["d"].tasks, "nothing of the append is state before its message is folded"
    assert early.place_appended("d", [spec("e")], 12) is None, "one append decision per run in flight"
    for event in [appended(*tasks), *decision.events]:  # one message: task.appended and its placements
        early.apply(event)
    usual.apply(appended(*tasks))
    for event in usual.decide(12).events:
        usual.apply(event)
    assert fingerprint(early) == fingerprint(usual)
    assert early.decide(13).events == [] and len(early.inflight) == 0, "nothing is placed twice"
    assert early.submitting == {}


def test_an_end_waits_for_an_append_in_flight_and_stops_what_it_placed() -> None:
    """A finalize (or cancel) folded while an append's placements are in flight: the end is
    decided once the append's message is folded, with the attempt it placed ended `cancelled`
    (its node told) in the same message, in the controller and the read models alike. A run whose
    end is decided already places nothing with an append."""
    for request in (
        RunFinalizeRequested(run_id="d", at_ms=11, result=RESULT),
        RunCancelRequested(run_id="d", at_ms=11, reason="stop"),
    ):
        core = dynamic_core()
        created = RunCreated(run_id="d", workflow_id="w", at_ms=0, tasks=[], kind="dynamic", max_tasks=3)
        model = create_run(created, 1)
        node = core.placer.nodes["n"]
        decision = core.place_appended("d", [spec("a")], 10)
        assert decision is not None and node.intended.cpu == 1.0
        core.apply(request)
        fold_run_event(model, request)
        assert core.decide(12).events == [], "no end while the append's placements are in flight"
        for event in [appended(spec("a")), *decision.events]:
            core.apply(event)
            fold_run_event(model, event)
        end = core.decide(13)
        stopped = [e for e in end.events if isinstance(e, AttemptFailed)]
        # its node is told from this event (RunController._send_cancels)
        assert [(e.task_id, e.error.error_type, e.error.origin, e.node_id) for e in stopped] == [
            ("a", "cancelled", "controller", "n")
        ]
        assert finished(end)
        for event in end.events:
            core.apply(event)
            fold_run_event(model, event)
        assert model.tasks["a"].state == "cancelled" and model.run.state != "running"
        assert node.intended.cpu == 0.0 and not core.placer.reservations and core.submitting == {}
        assert len(core.inflight) == 0 and core.decide(14).events == []
    ending = dynamic_core()
    ending.apply(RunCancelRequested(run_id="d", at_ms=1, reason="stop"))
    decide(ending, 2)  # its end decided, not folded back yet below
    ending.apply(RunCancelRequested(run_id="d", at_ms=3, reason="again"))
    assert ending.place_appended("d", [spec("z")], 4) is None


def test_placements_of_an_append_the_run_refuses_where_it_lands_hold_nothing() -> None:
    """Another head's append took the run's last place first: every fold refuses this append,
    and its placements name a task the run never took: no capacity stays held. (Its work is
    never sent: the append is stored only if nothing was written on the run's subject since the
    head's fold, maze/api/dynamic.py, so this interleaving reaches no worker.)"""
    full = dynamic_core(max_tasks=1)
    node = full.placer.nodes["n"]
    decision = full.place_appended("d", [spec("a")], 10)
    assert decision is not None
    full.apply(appended(spec("other", res=Resources(cpu=0))))
    for event in [appended(spec("a")), *decision.events]:
        full.apply(event)
    assert "a" not in full.runs["d"].tasks and node.intended.cpu == 0.0 and full.submitting == {}
    assert not any(key[1] == "a" for key in full.placer.reservations)


def test_no_placement_with_an_append_ahead_of_waiting_tasks_nor_for_an_ending_run() -> None:
    core = dynamic_core(max_tasks=5)
    core.apply(appended(spec("hog", res=Resources(cpu=4)), spec("waits", res=Resources(cpu=4))))
    decide(core, 10)  # hog runs, waits waits
    assert core.place_appended("d", [spec("small", res=Resources(cpu=0))], 11) is None, (
        "what waits goes first"
    )
    ending = dynamic_core()
    ending.apply(RunFinalizeRequested(run_id="d", at_ms=1, result=RESULT))
    assert ending.place_appended("d", [spec("a")], 2) is None
    over = dynamic_core(max_tasks=1)
    assert over.place_appended("d", [spec("a"), spec("b")], 2) is None, "an append no fold takes"
