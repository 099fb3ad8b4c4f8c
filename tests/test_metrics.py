"""Health, readiness and metrics: `/healthz`, `/readyz`, `/metrics` on a real head, the counts the
controller's fold feeds (maze/head/metrics.py) without NATS, and the readiness decision."""

from __future__ import annotations

import math

import httpx
import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from maze import MaClient, task
from maze.api.health import READY_MAX_PROJECTOR_LAG, not_ready, projector_lag
from maze.events import subjects
from maze.events.catalog import Event
from maze.events.nodes import NodeJoined
from maze.events.runs import RunCreated
from maze.events.specs import InputRef, InputValue, NodeCapacity, Resources, TaskError, TaskSpec
from maze.events.tasks import AttemptFailed, AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.head.metrics import FoldMetrics
from maze.head.scheduler import Scheduler
from tests.helpers import HeadProcess, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# ---- a real head ---------------------------------------------------------------------------------
@task
def ok(n: int = 0):
    return {"value": n}


@task(max_retries=0)
def fails(**values: int):
    raise RuntimeError("meant to fail")


@task
def never_runs(value: int = 0):
    return {"value": value}


def scrape(url: str) -> Samples:
    resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def finished(samples: Samples) -> dict[str, float]:
    return {
        state: samples.get(("maze_tasks_finished_total", (("state", state),)), 0.0)
        for state in ("succeeded", "failed", "cancelled", "timed_out")
    }


def test_healthz(head: HeadProcess) -> None:
    resp = httpx.get(f"{head.url}/healthz", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_on_a_ready_head(head: HeadProcess) -> None:
    resp = httpx.get(f"{head.url}/readyz", timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ready" and 0 <= body["projector_lag"] < READY_MAX_PROJECTOR_LAG


def test_health_is_unchanged(head: HeadProcess) -> None:
    body = httpx.get(f"{head.url}/health", timeout=10).json()
    assert set(body) == {"status", "controller_live", "projection_positions", "nodes"}


def test_metrics_count_each_task_outcome_once(head: HeadProcess, client: MaClient) -> None:
    before = scrape(head.url)
    assert before[("maze_controller_leader", ())] == 1
    assert before[("maze_nodes", (("state", "alive"),))] >= 1
    assert not math.isnan(before[("maze_projector_lag_messages", ())])
    placed_before = before.get(("maze_placement_wait_seconds_count", ()), 0.0)

    # 5 tasks succeed, then one fails (no retries), and the one after it never runs
    wf = client.create_workflow()
    oks = [wf.add_task(ok, inputs={"n": i}) for i in range(5)]
    failing = wf.add_task(fails, inputs={f"v{i}": t.outputs["value"] for i, t in enumerate(oks)})
    wf.add_task(never_runs, inputs={"value": failing.outputs["value"]})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "failed"

    want = {"succeeded": 5.0, "failed": 1.0, "cancelled": 1.0, "timed_out": 0.0}

    def counted() -> Samples | None:
        after = scrape(head.url)
        delta = {s: n - finished(before)[s] for s, n in finished(after).items()}
        return after if delta == want else None

    after = wait_until(counted, timeout=10)
    assert after[("maze_runs_finished_total", (("state", "failed"),))] >= 1
    assert after[("maze_placement_wait_seconds_count", ())] - placed_before == 6
    durations = {
        outcome: after.get(("maze_attempt_duration_seconds_count", (("outcome", outcome),)), 0.0)
        - before.get(("maze_attempt_duration_seconds_count", (("outcome", outcome),)), 0.0)
        for outcome in ("succeeded", "failed")
    }
    assert durations == {"succeeded": 5, "failed": 1}
    assert after[("maze_publish_latency_seconds_count", (("stream", subjects.RUNS_STREAM),))] > 0
    # the head's own worker takes its work in process (no work message): each of the 6 attempts
    # (more only if the delivery check handed one again on a slow machine)
    handed = ("maze_work_handed_locally_total", ())
    assert after[handed] - before.get(handed, 0.0) >= 6
    work_published = ("maze_publish_latency_seconds_count", (("stream", subjects.WORK_STREAM),))
    assert after.get(work_published, 0.0) == before.get(work_published, 0.0)  # nor any cancel
    for state in ("pending", "queued", "running", "retry_wait"):
        assert after[("maze_tasks_active", (("state", state),))] == 0
    # a scrape changes nothing
    assert finished(scrape(head.url)) == finished(after)


# ---- the fold's counts, without NATS -------------------------------------------------------------
ONE = msgspec.msgpack.encode(1)
RUNS, NODES = subjects.RUNS_STREAM, subjects.NODES_STREAM


def spec(task_id: str, reads: str | None = None) -> TaskSpec:
    given = InputRef(task_id=reads, key="x") if reads else InputValue(data=ONE)
    return TaskSpec(
        task_id=task_id,
        name=task_id,
        func_name="f",
        func_hash="c" * 64,
        call_style="kwargs",
        inputs={"x": given},
        outputs=None,
        # each of a, b, c asks more CPU than the one it reads: placed on its own, never as its
        # follower (maze/head/followers.py), so that each placement here is a pass of its own
        resources=Resources(cpu=1.0 + "abc".index(task_id)) if task_id in "abc" else Resources(),
    )


class Log:
    """A log the fold reads in order; `replay` folds it again from the start into a new core, as
    a controller restarted from an empty snapshot does, with the same metrics object."""

    def __init__(self) -> None:
        self.core = Scheduler(queue_factor=1.0)
        self.registry = CollectorRegistry()
        self.metrics = FoldMetrics(self.registry)
        self.entries: list[tuple[str, int, Event]] = []
        self.seqs = {RUNS: 0, NODES: 0}

    def append(self, stream: str, event: Event) -> None:
        self.seqs[stream] += 1
        self.entries.append((stream, self.seqs[stream], event))
        self.fold(stream, self.seqs[stream], event)

    def fold(self, stream: str, seq: int, event: Event) -> None:
        if self.metrics.observes(stream, seq):
            self.metrics.fold(self.core, event)
        else:
            self.core.apply(event)

    def decide(self, now: int) -> list[Event]:
        events = self.core.decide(now).events
        for event in events:
            self.append(RUNS, event)
        return events

    def replay(self) -> None:
        self.core = Scheduler(queue_factor=1.0)
        for stream, seq, event in self.entries:
            self.fold(stream, seq, event)
        self.metrics.went_live(self.core, dict(self.seqs))


def started(run_id: str, task_id: str, at_ms: int) -> AttemptStarted:
    return AttemptStarted(run_id=run_id, task_id=task_id, attempt=1, node_id="n", at_ms=at_ms)


def test_fold_counts_transitions_once_and_not_on_replay() -> None:
    log = Log()
    joined = NodeJoined(
        node_id="n",
        session="s",
        at_ms=0,
        hostname="h",
        ip="127.0.0.1",
        capacity=NodeCapacity(cpus=4, memory_mb=16_000),
    )
    log.append(NODES, joined)
    # history before the controller caught up: not counted
    old = RunCreated(run_id="old", workflow_id="w", at_ms=0, tasks=[spec("a")])
    log.append(RUNS, old)
    log.decide(1)
    log.metrics.went_live(log.core, dict(log.seqs))
    metrics = log.metrics
    assert metrics.active["queued"] == 1 and metrics.tasks_finished["succeeded"] == 0

    log.append(
        RUNS,
        RunCreated(run_id="r", workflow_id="w", at_ms=100, tasks=[spec("a"), spec("b", "a"), spec("c", "b")]),
    )
    assert metrics.active["pending"] == 3
    (placed,) = [e for e in log.decide(110) if isinstance(e, AttemptPlaced) and e.run_id == "r"]
    assert placed.task_id == "a"
    log.append(RUNS, started("r", "a", 112))
    result = msgspec.msgpack.encode({"x": msgspec.Raw(ONE)})
    succeeded = AttemptSucceeded(
        run_id="r", task_id="a", attempt=1, node_id="n", at_ms=120, result=result, duration_ms=8.0
    )
    log.append(RUNS, succeeded)
    log.append(RUNS, succeeded)  # stored twice (a publish retried outside the dedupe window)
    log.fold(RUNS, log.seqs[RUNS], succeeded)  # and the same message delivered twice
    assert metrics.tasks_finished["succeeded"] == 1
    assert [e.task_id for e in log.decide(130) if isinstance(e, AttemptPlaced)] == ["b"]
    log.append(RUNS, started("r", "b", 131))
    error = TaskError(error_type="user_code", message="boom")
    log.append(RUNS, AttemptFailed(run_id="r", task_id="b", attempt=1, at_ms=140, error=error, node_id="n"))
    assert metrics.active == {"pending": 1, "queued": 1, "running": 0, "retry_wait": 0}
    log.decide(150)  # no retries: the run ends failed, and c never runs
    counts = dict(metrics.tasks_finished)
    assert counts == {"succeeded": 1, "failed": 1, "cancelled": 1, "timed_out": 0}
    assert metrics.runs_finished["failed"] == 1
    assert metrics.active == {"pending": 0, "queued": 1, "running": 0, "retry_wait": 0}  # old's a

    def sample(name: str, **labels: str) -> float | None:
        return log.registry.get_sample_value(name, labels)

    assert sample("maze_placement_wait_seconds_count") == 2  # a: 10 ms, b: 10 ms
    assert sample("maze_placement_wait_seconds_sum") == 0.02
    assert sample("maze_attempt_duration_seconds_count", outcome="succeeded") == 1
    assert sample("maze_attempt_duration_seconds_sum", outcome="succeeded") == 0.008
    assert sample("maze_attempt_duration_seconds_count", outcome="failed") == 1
    assert sample("maze_attempt_duration_seconds_sum", outcome="failed") == 0.009

    # a restart replays the log from the start: nothing is counted again, the gauge is retaken
    log.replay()
    assert dict(metrics.tasks_finished) == counts and metrics.runs_finished["failed"] == 1
    assert metrics.active == {"pending": 0, "queued": 1, "running": 0, "retry_wait": 0}
    assert sample("maze_placement_wait_seconds_count") == 2


def test_readiness_decision() -> None:
    assert not_ready(True, True, 0) == []
    assert not_ready(True, True, READY_MAX_PROJECTOR_LAG - 1) == []
    assert not_ready(True, True, READY_MAX_PROJECTOR_LAG) == [
        f"the read models are {READY_MAX_PROJECTOR_LAG} runs-stream messages behind "
        f"(ready below {READY_MAX_PROJECTOR_LAG})"
    ]
    assert not_ready(False, False, None) == [
        "not connected to NATS",
        "the run controller has not caught up with the log",
        "the read models did not answer",
    ]
    assert projector_lag(120, 100) == 20
    assert projector_lag(100, 120) == 0  # the read models may be ahead of the controller
