"""Re-record the third golden history, `operations.msgpack`: a run cancelled with a running and a
queued attempt, a run past its run-level timeout, and a failed-only retry of the cancelled run
carrying its succeeded task's result. The run controller's real core makes every decision; a
scripted worker answers.

    python -m tests.golden.record_operations   # only when an event changes on purpose; review the diff
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from maze.events import subjects
from maze.events.catalog import Event
from maze.events.codec import encode_events
from maze.events.nodes import NodeJoined
from maze.events.runs import RunCancelRequested, RunCreated
from maze.events.specs import InputRef, InputValue, NodeCapacity, TaskSpec
from maze.events.tasks import AttemptStarted, AttemptSucceeded
from maze.head.scheduler import Scheduler
from tests.golden.refold import refold

HERE = Path(__file__).parent
ONE = msgspec.msgpack.encode({"x": msgspec.Raw(msgspec.msgpack.encode(1))})


def _spec(task_id: str, reads: str | None = None, carried: bytes | None = None) -> TaskSpec:
    inputs: dict[str, InputRef | InputValue] = (
        {"x": InputRef(task_id=reads, key="x")}
        if reads
        else {"x": InputValue(data=msgspec.msgpack.encode(1))}
    )
    return TaskSpec(
        task_id=task_id,
        name=task_id,
        func_name="f",
        func_hash="c" * 64,
        call_style="kwargs",
        inputs=inputs,
        outputs=("x",),
        carried=carried,
    )


class Recorder:
    def __init__(self) -> None:
        self.core = Scheduler(queue_factor=1.0)
        self.messages: list[dict[str, object]] = []
        self.seq = {subjects.RUNS_STREAM: 0, subjects.NODES_STREAM: 0}
        self.now = 100

    def store(self, *events: Event) -> None:
        for event in events:
            node = isinstance(event, NodeJoined)
            stream = subjects.NODES_STREAM if node else subjects.RUNS_STREAM
            subject = subjects.node_subject(event.node_id) if node else subjects.run_subject(event.run_id)  # type: ignore[union-attr]
            self.seq[stream] += 1
            self.messages.append(
                {
                    "stream": stream,
                    "seq": self.seq[stream],
                    "subject": subject,
                    "data": encode_events([event]),
                }
            )
            self.core.apply(event)

    def decide(self, step: int = 10) -> dict[tuple[str, str], int]:
        self.now += step
        decision = self.core.decide(self.now)
        self.store(*decision.events)
        return {(i.run_id, i.task_id): i.attempt for items in decision.work.values() for i in items}

    def report(self, kind: type, run_id: str, task_id: str, attempt: int, **extra: object) -> None:
        self.now += 10
        self.store(
            kind(run_id=run_id, task_id=task_id, attempt=attempt, at_ms=self.now, node_id="n1", **extra)
        )


def record() -> list[dict[str, object]]:
    r = Recorder()
    capacity = NodeCapacity(cpus=2.0, memory_mb=1000)
    r.store(NodeJoined(node_id="n1", session="s1", at_ms=10, hostname="n1", ip="10.0.0.1", capacity=capacity))
    r.store(
        RunCreated(run_id="run_c", workflow_id="w", at_ms=50, tasks=[_spec("a"), _spec("b"), _spec("c", "a")])
    )
    placed = r.decide()  # a and b
    r.report(AttemptStarted, "run_c", "a", placed[("run_c", "a")])
    r.report(AttemptSucceeded, "run_c", "a", placed[("run_c", "a")], result=ONE)
    placed.update(r.decide())  # c placed; b still queued
    r.report(AttemptStarted, "run_c", "c", placed[("run_c", "c")])
    r.store(RunCancelRequested(run_id="run_c", at_ms=r.now, reason="no longer needed"))
    r.decide()  # b and c end cancelled, then the run
    r.store(RunCreated(run_id="run_t", workflow_id="w", at_ms=r.now, tasks=[_spec("t")], timeout_seconds=1.0))
    started = r.now
    t = r.decide()[("run_t", "t")]
    r.report(AttemptStarted, "run_t", "t", t)
    while "run_t" not in r.core.done_runs:
        r.decide(step=500)
    assert r.now >= started + 1000
    retry = [_spec("a", carried=ONE), _spec("b"), _spec("c", "a")]
    r.store(RunCreated(run_id="run_r", workflow_id="w", at_ms=r.now, tasks=retry, retry_of="run_c"))
    placed = r.decide()  # b and c (a is carried)
    for task_id in ("b", "c"):
        r.report(AttemptStarted, "run_r", task_id, placed[("run_r", task_id)])
        r.report(AttemptSucceeded, "run_r", task_id, placed[("run_r", task_id)], result=ONE)
    r.decide()
    assert dict(r.core.done_runs) == {"run_c": "cancelled", "run_t": "timed_out", "run_r": "succeeded"}
    return r.messages


def main() -> None:
    messages = record()
    (HERE / "operations.msgpack").write_bytes(msgspec.msgpack.encode(messages))
    refold("operations.msgpack", "operations_readmodels.json")  # the read models it folds into
    print(f"recorded {len(messages)} messages")


if __name__ == "__main__":
    main()
