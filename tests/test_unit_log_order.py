"""The controller is a fold of the log (DESIGN.md §6.6), tried with random interleavings: a live
controller core whose decisions reach the log late, not at all, or are stored while the publish
reports an error; work messages that are lost; results missing the key a downstream task reads;
a worker whose reports come late, twice, or from a session the controller has declared lost; and
the controller crashing mid-flight, restarted from a snapshot of that moment. Whenever nothing is
in flight, the live core's state equals a fresh fold of the stored log (in either order of the
node and run streams), a snapshot restores it, and the projection agrees with it on every task;
at the end every run has ended, exactly once."""

from __future__ import annotations

import random

import msgspec

from maze.events.catalog import Event
from maze.events.nodes import NodeJoined, NodeLost
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputRef, InputValue, NodeCapacity, RetryPolicy, TaskError, TaskSpec
from maze.events.tasks import (
    AttemptFailed,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
)
from maze.events.work import WorkItem
from maze.head.scheduler import Decision, Scheduler
from maze.head.snapshot import capture, decode, encode, fingerprint, restore
from maze.projections.fold import RunModel, create_run, fold_run_event

RESULT = msgspec.msgpack.encode({"x": 1})
OTHER = msgspec.msgpack.encode({"y": 1})  # lacks the key a downstream task reads


def _specs(rng: random.Random, n: int) -> list[TaskSpec]:
    specs = []
    for i in range(n):
        ups = [f"t{j}" for j in range(i) if rng.random() < 0.3]
        inputs: dict[str, InputRef | InputValue] = {
            f"in{j}": InputRef(task_id=u, key="x") for j, u in enumerate(ups)
        }
        if not inputs:
            inputs["x"] = InputValue(data=msgspec.msgpack.encode(i))
        specs.append(
            TaskSpec(
                task_id=f"t{i}",
                name=f"t{i}",
                func_name="f",
                func_hash="c" * 64,
                call_style="kwargs",
                inputs=inputs,
                outputs=None,
                retry=RetryPolicy(max_retries=rng.choice([0, 1, 3]), backoff_seconds=rng.choice([0.0, 0.05])),
            )
        )
    return specs


def _joined(node: str, session: str) -> NodeJoined:
    return NodeJoined(
        node_id=node,
        session=session,
        at_ms=0,
        hostname="h",
        ip="10.0.0.1",
        capacity=NodeCapacity(cpus=2.0, memory_mb=1000),
    )


class World:
    """The log, a live controller core reading it (with a lag), its unpublished decisions, and
    the workers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.log: list[Event] = []
        self.core = Scheduler(queue_factor=2.0, grace_ms=10**9, resend_after_ms=50)
        self.read = 0  # log events the live core has folded
        self.unpublished: list[Decision] = []
        self.uncertain: list[tuple[int, Decision]] = []  # stored, but the publish said it failed
        self.held: list[WorkItem] = []  # work the workers hold (any session)
        self.running: list[WorkItem] = []
        self.sessions = {"a": "a1", "b": "b1"}
        self.node_of = {"a1": "a", "b1": "b"}
        self.seen: set[tuple[str, str, int]] = set()  # a worker starts each attempt once
        self.now = 1_000
        for node, session in self.sessions.items():
            self.log.append(_joined(node, session))
        self.runs = [f"r{i}" for i in range(rng.randint(1, 3))]
        for run_id in self.runs:
            self.log.append(
                RunCreated(run_id=run_id, workflow_id="w", at_ms=1, tasks=_specs(rng, rng.randint(1, 6)))
            )
        self.live = False

    # ---- the controller -------------------------------------------------------------------
    def fold_some(self, k: int) -> None:
        for event in self.log[self.read : self.read + k]:
            self.core.apply(event)
        self.read = min(len(self.log), self.read + k)
        # a failed publish is forgotten once the log is folded as far as it reached then
        for entry in [e for e in self.uncertain if e[0] <= self.read]:
            self.uncertain.remove(entry)
            self.core.forget(entry[1])
        if not self.live and self.read == len(self.log):
            self.live = True
            self.core.went_live(self.now)

    def holds(self, node: str, session: str, key: tuple[str, str, int]) -> bool:
        return any(i.key == key and i.session == session for i in self.running)

    def crash(self) -> None:
        """The controller dies: what it was publishing is stored or not, its overlay is gone; it
        starts again from a snapshot of its state as it was (mid-flight)."""
        for decision in self.unpublished:
            if self.rng.random() < 0.5:
                self.log += decision.events
        self.unpublished, self.uncertain = [], []
        self.core = restore(decode(encode(capture(self.core, {}))), 2.0, 10**9, 50)
        self.live = False

    def decide(self) -> None:
        if self.live:
            decision = self.core.decide(self.now, self.holds)
            if decision.events or decision.work or decision.resend:
                self.unpublished.append(decision)

    def publish_one(self, fail: bool) -> None:
        if not self.unpublished:
            return
        decision = self.unpublished.pop(self.rng.randrange(len(self.unpublished)))
        if fail:
            if self.rng.random() < 0.5:  # stored all the same: the ack was lost
                self.log += decision.events
            self.uncertain.append((len(self.log), decision))
            return
        self.log += decision.events
        for items in [*decision.work.values(), *decision.resend.values()]:
            self.held += [i for i in items if self.rng.random() > 0.15]  # a work message lost

    # ---- the workers ----------------------------------------------------------------------
    def work_some(self) -> None:
        rng = self.rng
        if self.held and rng.random() < 0.6:
            item = self.held.pop(rng.randrange(len(self.held)))
            if item.session not in self.sessions.values() or item.key in self.seen:
                return  # addressed to a session that is gone, or sent again: ignored
            self.seen.add(item.key)
            if rng.random() < 0.1:
                self._report(AttemptRejected, item, reason="does not fit now")
                return
            self._report(AttemptStarted, item)
            self.running.append(item)
        elif self.running:
            item = self.running.pop(rng.randrange(len(self.running)))
            if rng.random() < 0.25:
                error = TaskError(error_type="user_code", message="boom", retryable=True)
                self._report(AttemptFailed, item, error=error)
            else:
                self._report(AttemptSucceeded, item, result=RESULT if rng.random() > 0.05 else OTHER)
            if rng.random() < 0.1:  # a redelivered ack: the same report twice
                self.log.append(self.log[-1])

    def _report(self, kind: type, item: WorkItem, **extra: object) -> None:
        key = {"run_id": item.run_id, "task_id": item.task_id, "attempt": item.attempt, "at_ms": self.now}
        key["node_id"] = self.node_of[item.session]  # a worker names its node in every report
        self.log.append(kind(**key, **extra))

    def lose_node(self) -> None:
        """The controller declares a node lost and it rejoins with a new session; what its old
        session was running may still report (a frozen worker that wakes up)."""
        node = self.rng.choice(sorted(self.sessions))
        old = self.sessions[node]
        new = f"{node}{int(old[1:]) + 1}"
        self.log.append(NodeLost(node_id=node, session=old, at_ms=self.now))
        self.log.append(_joined(node, new))
        self.sessions[node] = new
        self.node_of[new] = node
        self.held = [i for i in self.held if i.session != old]
        if self.rng.random() < 0.5:  # the old session's running attempts never report
            self.running = [i for i in self.running if i.session != old]

    # ---- checks ---------------------------------------------------------------------------
    def quiet(self) -> bool:
        return not self.unpublished and not self.uncertain and self.read == len(self.log)

    def check(self) -> None:
        assert len(self.core.inflight) == 0, "every decision came back from the log"
        fresh = Scheduler(queue_factor=2.0, grace_ms=10**9, resend_after_ms=50)
        for event in self.log:
            fresh.apply(event)
        assert fingerprint(self.core) == fingerprint(fresh), "the live state is the fold of the log"
        # a replay reads the node and run streams side by side, in no fixed order between them
        nodes = [e for e in self.log if isinstance(e, NodeJoined | NodeLost)]
        runs = [e for e in self.log if not isinstance(e, NodeJoined | NodeLost)]
        for order in (nodes + runs, runs + nodes):
            apart = Scheduler(queue_factor=2.0, grace_ms=10**9, resend_after_ms=50)
            for event in order:
                apart.apply(event)
            assert fingerprint(apart) == fingerprint(fresh), "one state whatever the streams' interleaving"
        again = restore(decode(encode(capture(self.core, {}))), 2.0, 10**9, 50)
        assert fingerprint(again) == fingerprint(self.core), "a snapshot restores the same state"
        models = project(self.log)
        for run_id, run in self.core.runs.items():
            rows = models[run_id].tasks
            assert {t: r.state for t, r in rows.items()} == {t: k.state for t, k in run.tasks.items()}
            assert {t: (r.attempt, r.failures) for t, r in rows.items()} == {
                t: (k.attempt, k.failures) for t, k in run.tasks.items()
            }


def project(log: list[Event]) -> dict[str, RunModel]:
    models: dict[str, RunModel] = {}
    for seq, event in enumerate(log, start=1):
        if isinstance(event, RunCreated):
            models.setdefault(event.run_id, create_run(event, seq))
        elif getattr(event, "run_id", None) in models:
            fold_run_event(models[event.run_id], event)  # type: ignore[union-attr]
    return models


def run_world(seed: int) -> World:
    rng = random.Random(seed)
    world = World(rng)
    for _ in range(400):
        world.now += rng.randint(0, 30)
        roll = rng.random()
        if roll < 0.3:
            world.fold_some(rng.randint(1, 4))
        elif roll < 0.5:
            world.decide()
        elif roll < 0.7:
            world.publish_one(fail=rng.random() < 0.1)
        elif roll < 0.96:
            world.work_some()
        elif roll < 0.985 and world.live:
            world.lose_node()
        elif roll >= 0.985:
            world.crash()
        if world.quiet() and world.live:
            world.check()
    # drain: everything lands, every worker finishes, until every run has ended
    for _ in range(2_000):
        world.now += 10
        while world.unpublished:
            world.publish_one(fail=rng.random() < 0.05)
        world.fold_some(len(world.log))
        if world.quiet():
            world.check()
        if all(r in world.core.done_runs for r in world.runs):
            break
        world.decide()
        world.work_some()
        world.work_some()
    assert all(r in world.core.done_runs for r in world.runs), f"seed {seed}: a run never ended"
    return world


def test_random_interleavings_keep_the_controller_a_fold_of_the_log() -> None:
    for seed in range(100):
        world = run_world(seed)
        finished = [e for e in world.log if isinstance(e, RunFinished)]
        assert sorted(e.run_id for e in finished) == sorted(world.runs), f"seed {seed}: one end per run"
        models = project(world.log)
        for end in finished:
            assert models[end.run_id].run.state == end.state
            if end.state == "succeeded":
                assert all(t.state == "succeeded" for t in models[end.run_id].tasks.values())
