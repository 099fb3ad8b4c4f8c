"""A run whose whole life is in its first message ends in it (maze/head/run_end.py): the end the
API writes there is the one the controller's pass decides after folding that message, and once
folded with it, the controller decides nothing more for the run (no second end)."""

from __future__ import annotations

import msgspec

from maze.events.agents import AgentSpec
from maze.events.catalog import Event
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import TaskError
from maze.events.tasks import AttemptFailed
from maze.head.run_end import ends_with
from maze.head.scheduler import Scheduler
from tests.test_unit_followers import chain
from tests.test_unit_scheduler import finished, items, joined, spec, succeed_events

NOW = 1_000


def submit(*specs, cpus: float = 4, **created_kw: object):  # type: ignore[no-untyped-def]
    """A core with one node, and a new run's placements made at submit (as the API does)."""
    core = Scheduler(queue_factor=1.0, grace_ms=60_000)
    core.apply(joined(cpus=cpus))
    created = RunCreated(run_id="r", workflow_id="w", at_ms=NOW, tasks=list(specs), **created_kw)  # type: ignore[arg-type]
    decision = core.place_new_run(created, NOW)
    assert decision is not None
    return core, created, decision


def pass_after(core: Scheduler, message: list[Event]) -> list[RunFinished]:
    """Fold the message as the log delivers it, then the controller's pass: the ends it decides."""
    for event in message:
        core.apply(event)
    return finished(core.decide(NOW + 5))


def check(
    core: Scheduler, created: RunCreated, placed: list[Event], reports: list[Event]
) -> RunFinished | None:
    """ends_with agrees with the pass; with the end in the message, nothing more is decided."""
    end = ends_with(created, [*placed, *reports], NOW + 1, 0)
    decided = pass_after(core, [created, *placed, *reports])
    if end is None:
        assert not [e for e in decided if e.state == "succeeded"]
    else:
        assert [e.state for e in decided] == ["succeeded"]
    return end


def test_a_one_task_run_whose_success_is_in_its_message_ends_there() -> None:
    core, created, decision = submit(spec("t0"))
    reports = succeed_events(items(decision)[0])
    end = check(core, created, decision.events, reports)
    assert end is not None and end.state == "succeeded" and end.run_id == "r"


def test_with_the_end_folded_in_the_same_message_nothing_more_is_decided() -> None:
    core, created, decision = submit(spec("t0"))
    reports = succeed_events(items(decision)[0])
    end = ends_with(created, [*decision.events, *reports], NOW + 1, 7)
    assert end is not None and end.epoch == 7
    assert pass_after(core, [created, *decision.events, *reports, end]) == []
    assert core.done_runs["r"] == "succeeded" and "r" not in core.runs


def test_a_chain_taken_whole_ends_and_one_taken_in_part_does_not() -> None:
    core, created, decision = submit(*chain(3))
    work = items(decision)
    assert [w.task_id for w in work] == ["t0", "t1", "t2"]  # followers, placed with their head
    whole = [e for w in work for e in succeed_events(w)]
    assert check(core, created, decision.events, whole) is not None
    core, created, decision = submit(*chain(3))
    part = [e for w in items(decision)[:2] for e in succeed_events(w)]
    assert check(core, created, decision.events, part) is None


def test_what_does_not_end_in_its_first_message() -> None:
    # one of two independent tasks
    core, created, decision = submit(spec("a"), spec("b"))
    assert check(core, created, decision.events, succeed_events(items(decision)[0])) is None
    # a failure (retried by the pass, not ended)
    core, created, decision = submit(spec("t0"))
    item = items(decision)[0]
    error = TaskError(error_type="user_code", message="boom", retryable=True)
    failed = AttemptFailed(run_id="r", task_id="t0", attempt=1, at_ms=3, error=error, node_id="n")
    reports = [*succeed_events(item)[:1], failed]
    assert check(core, created, decision.events, reports) is None
    # a success of an attempt not placed in the message
    core, created, decision = submit(spec("t0"))
    other = msgspec.structs.replace(item, attempt=2)
    assert ends_with(created, [*decision.events, *succeed_events(other)], NOW, 0) is None
    # a run the pass judges by more than its tasks: a timeout (its deadline), a workspace, a
    # retry's origin; or one that is not static
    for kw in ({"timeout_seconds": 30.0}, {"workspace": "f" * 64}, {"retry_of": "r0"}, {"kind": "dynamic"}):
        core, created, decision = submit(spec("t0"), **kw)
        reports = succeed_events(items(decision)[0])
        assert ends_with(created, [*decision.events, *reports], NOW, 0) is None, kw


def test_a_run_the_message_does_not_hold_whole_never_ends_there() -> None:
    """What else the pass would weigh, or a run whose tasks are not all in its run.created."""
    _core, created, decision = submit(spec("t0"))
    events = [*decision.events, *succeed_events(items(decision)[0])]
    assert ends_with(created, events, NOW, 0) is not None
    agent = AgentSpec(
        prompt="p",
        decide=spec("d"),
        decide_accepts=None,
        tools=(),
        max_steps=1,
        task_timeout=1.0,
        catalog=b"",
    )
    for changed in (
        {"chunks": 2},  # more tasks in tasks.added chunks
        {"task_count": 2},  # a run.created that does not hold its whole run
        {"functions": {"c" * 64: b"code"}},  # an older run's inline code
        {"agent": agent},
    ):
        assert ends_with(msgspec.structs.replace(created, **changed), events, NOW, 0) is None, changed


def test_two_successes_of_one_task_are_not_the_run_whole() -> None:
    _core, created, decision = submit(spec("a"), spec("b"))
    first = items(decision)[0]
    twice = [*succeed_events(first), *succeed_events(first)]
    assert ends_with(created, [*decision.events, *twice], NOW, 0) is None
