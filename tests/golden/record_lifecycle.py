"""Re-record the second golden history, `lifecycle.msgpack`: retries, a rejection and node loss (a
started attempt and a queued one), which a real head on a machine without a GPU cannot be made to
show on demand. The run controller's real core makes every decision; a scripted worker answers.

    python -m tests.golden.record_lifecycle   # only when an event changes on purpose; review the diff

Writes the messages (as the streams would hold them, one event each) and the read models they
fold into (`lifecycle_readmodels.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from maze.events import subjects
from maze.events.catalog import Event
from maze.events.codec import encode_events
from maze.events.nodes import NodeJoined, NodeLost
from maze.events.runs import RunCreated
from maze.events.specs import InputRef, InputValue, NodeCapacity, RetryPolicy, TaskError, TaskSpec
from maze.events.tasks import AttemptFailed, AttemptRejected, AttemptStarted, AttemptSucceeded
from maze.head.scheduler import Scheduler
from maze.projections import db
from maze.projections.folder import Folder
from maze.projections.schema import TABLES

HERE = Path(__file__).parent
RUN = "run_lifecycle"
ONE = msgspec.msgpack.encode({"x": 1})


def _spec(task_id: str, reads: str | None = None, retries: int = 0) -> TaskSpec:
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
        retry=RetryPolicy(max_retries=retries),
    )


def _joined(node: str, session: str) -> NodeJoined:
    capacity = NodeCapacity(cpus=1.0, memory_mb=1000)
    return NodeJoined(
        node_id=node, session=session, at_ms=10, hostname=node, ip="10.0.0.1", capacity=capacity
    )


class Recorder:
    def __init__(self) -> None:
        self.core = Scheduler(queue_factor=1.0)
        self.messages: list[dict[str, object]] = []
        self.seq = {subjects.RUNS_STREAM: 0, subjects.NODES_STREAM: 0}
        self.now = 100

    def store(self, *events: Event) -> None:
        for event in events:
            node = isinstance(event, NodeJoined | NodeLost)
            stream = subjects.NODES_STREAM if node else subjects.RUNS_STREAM
            subject = subjects.node_subject(event.node_id) if node else subjects.run_subject(RUN)  # type: ignore[union-attr]
            self.seq[stream] += 1
            data = encode_events([event])
            self.messages.append(
                {"stream": stream, "seq": self.seq[stream], "subject": subject, "data": data}
            )
            self.core.apply(event)

    def decide(self) -> dict[str, tuple[str, int, str]]:
        """A pass, stored: placed task -> (node, attempt, session)."""
        self.now += 10
        decision = self.core.decide(self.now)
        self.store(*decision.events)
        return {i.task_id: (n, i.attempt, i.session) for n, items in decision.work.items() for i in items}

    def report(self, kind: type, task_id: str, attempt: int, node: str, **extra: object) -> None:
        self.now += 10
        common = {"run_id": RUN, "task_id": task_id, "attempt": attempt, "at_ms": self.now}
        self.store(kind(**common, node_id=node, **extra))


def record() -> list[dict[str, object]]:
    r = Recorder()
    r.store(_joined("n1", "s1"), _joined("n2", "s2"))
    tasks = [_spec("a", retries=1), _spec("b", reads="a"), _spec("c", retries=1)]
    r.store(RunCreated(run_id=RUN, workflow_id="w", at_ms=50, tasks=tasks))
    placed = r.decide()  # a and c, one node each
    node_a, node_c = placed["a"][0], placed["c"][0]
    r.report(AttemptRejected, "a", 1, node_a, reason="GPU 0 has 100 MB free, needs 200 MB")
    r.report(AttemptStarted, "c", 1, node_c)
    r.store(NodeLost(node_id=node_c, session=placed["c"][2], at_ms=r.now, reason="heartbeat_timeout"))
    r.store(_joined(node_c, placed["c"][2] + "-2"))
    placed = r.decide()  # a placed again (a rejection uses no retry); c lost after it started
    placed.update(r.decide())  # c: a node_lost failure, its retry scheduled
    placed.update(r.decide())
    a2 = placed["a"]
    r.report(AttemptStarted, "a", a2[1], a2[0])
    error = TaskError(error_type="user_code", message="ValueError: flaky", retryable=True, origin="task")
    r.store(AttemptFailed(run_id=RUN, task_id="a", attempt=a2[1], at_ms=r.now, error=error, node_id=a2[0]))
    c2 = placed["c"]
    r.report(AttemptStarted, "c", c2[1], c2[0])
    r.report(AttemptSucceeded, "c", c2[1], c2[0], result=ONE)
    r.decide()  # a's retry
    a3 = r.decide()["a"]
    r.report(AttemptStarted, "a", a3[1], a3[0])
    r.report(AttemptSucceeded, "a", a3[1], a3[0], result=ONE)
    b1 = r.decide()["b"]
    # b's node gets a new session before b starts: b is placed again, no failure counted
    r.store(_joined(b1[0], b1[2] + "-new"))
    r.decide()
    b2 = r.decide()["b"]
    r.report(AttemptStarted, "b", b2[1], b2[0])
    r.report(AttemptSucceeded, "b", b2[1], b2[0], result=ONE)
    r.decide()  # the run ends
    assert RUN in r.core.done_runs, "the scripted run did not end"
    return r.messages


def main() -> None:
    messages = record()
    (HERE / "lifecycle.msgpack").write_bytes(msgspec.msgpack.encode(messages))
    conn = db.open_db(":memory:")
    folder = Folder(conn)
    from maze.events.codec import decode_events

    folder.commit(*folder.fold([(m["stream"], m["seq"], decode_events(m["data"])) for m in messages]))  # type: ignore[arg-type]
    snapshot = {
        t: [list(row) for row in conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()] for t in TABLES
    }
    (HERE / "lifecycle_readmodels.json").write_text(
        json.dumps(snapshot, indent=1, sort_keys=True, default=str) + "\n"
    )
    print(f"recorded {len(messages)} messages")


if __name__ == "__main__":
    main()
