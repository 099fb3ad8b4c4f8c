"""Folds are pure: the same events give the same rows, in any batching, replays included."""

from __future__ import annotations

import json
import math

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from maze.events.codec import decode_events, encode_events, encode_value
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputRef, InputValue, TaskError, TaskSpec
from maze.events.tasks import (
    AttemptFailed,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)
from maze.head.run_state import apply_attempt_event, new_run, ready_tasks
from maze.projections.fold import create_run, fold_run_event, summarize


def _history() -> list:
    a = TaskSpec(
        task_id="a",
        name="a",
        func_name="f",
        func_hash="h",
        call_style="kwargs",
        inputs={"x": InputValue(data=encode_value(1))},
        outputs=["y"],
    )
    b = TaskSpec(
        task_id="b",
        name="b",
        func_name="f",
        func_hash="h",
        call_style="kwargs",
        inputs={"x": InputRef(task_id="a", key="y")},
        outputs=["y"],
    )
    lost = TaskError(error_type="node_lost", message="gone", retryable=True)
    return [
        RunCreated(run_id="r", workflow_id="w", at_ms=1, tasks=[a, b], functions={"h": b"f"}),
        AttemptPlaced(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=2, session="s1"),
        AttemptStarted(run_id="r", task_id="a", attempt=1, node_id="n", at_ms=3),
        AttemptFailed(run_id="r", task_id="a", attempt=1, at_ms=4, error=lost, node_id="n"),
        RetryScheduled(run_id="r", task_id="a", next_attempt=2, at_ms=4),
        AttemptPlaced(run_id="r", task_id="a", attempt=2, node_id="n", at_ms=5, session="s2"),
        AttemptStarted(run_id="r", task_id="a", attempt=2, node_id="n", at_ms=6),
        AttemptSucceeded(
            run_id="r", task_id="a", attempt=2, node_id="n", at_ms=7, result=encode_value({"y": 2})
        ),
        # a late duplicate terminal event for the same attempt must change nothing
        AttemptFailed(run_id="r", task_id="a", attempt=2, at_ms=8, error=lost, node_id="n"),
        AttemptPlaced(run_id="r", task_id="b", attempt=1, node_id="n", at_ms=9, session="s2"),
        AttemptStarted(run_id="r", task_id="b", attempt=1, node_id="n", at_ms=10),
        AttemptSucceeded(
            run_id="r", task_id="b", attempt=1, node_id="n", at_ms=11, result=encode_value({"y": 3})
        ),
        RunFinished(run_id="r", at_ms=12, state="succeeded"),
    ]


def _project(events: list) -> dict:
    model = create_run(events[0], 1)
    for event in events[1:]:
        fold_run_event(model, event)
    summarize(model)
    return msgspec.to_builtins(
        {
            "run": model.run,
            "tasks": model.tasks,
            "attempts": {f"{k[0]}/{k[1]}": v for k, v in model.attempts.items()},
        }
    )


def test_projection_fold_is_deterministic_and_idempotent() -> None:
    events = _history()
    first = _project(events)
    assert first == _project(decode_events(encode_events(events)))  # survives the wire
    assert first["run"]["state"] == "succeeded" and first["run"]["tasks_succeeded"] == 2
    assert first["tasks"]["a"]["state"] == "succeeded" and first["tasks"]["a"]["attempt"] == 2
    assert first["attempts"]["a/1"]["state"] == "failed" and first["attempts"]["a/2"]["state"] == "succeeded"
    # replaying a duplicate of any event leaves the rows as they were
    doubled = [events[0]] + [e for e in events[1:] for _ in range(2)]
    assert _project(doubled) == first


def test_controller_fold_readiness() -> None:
    events = _history()
    run = new_run(events[0])
    assert ready_tasks(run) == ["a"]
    became_ready = []
    for event in events[1:-1]:
        became_ready += apply_attempt_event(run, event)
        if event is events[7]:  # a succeeded: its result is kept, raw, for its reader b
            assert run.tasks["a"].result == {"y": encode_value(2)}
    assert became_ready == ["b"]
    # b, a's only reader, succeeded: a's result is freed
    assert run.remaining == 0 and run.tasks["a"].result is None


def test_unknown_event_tag_is_skipped() -> None:
    known = RunFinished(run_id="r", at_ms=1, state="succeeded")
    data = msgspec.msgpack.encode([{"type": "from.the.future", "x": 1}, known])
    assert decode_events(data) == [known]


def test_row_structs_match_the_tables() -> None:
    from maze.projections.rows import ROW_TYPES
    from maze.projections.schema import TABLES

    for table, row_type in ROW_TYPES.items():
        assert row_type.__struct_fields__ == tuple(TABLES[table]), table


def _spec(task_id: str, after: tuple[str, ...] = ()) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        name=task_id,
        func_name="f",
        func_hash="h",
        call_style="kwargs",
        inputs={},
        outputs=None,
        after=after,
    )


def test_chunks_fold_in_any_order_once_each() -> None:
    from maze.events.runs import TasksAdded

    specs = [_spec(f"t{i}") for i in range(9)]
    created = RunCreated(run_id="r", workflow_id="w", at_ms=1, tasks=specs[:3], task_count=9, chunks=3)
    second = TasksAdded(run_id="r", chunk=1, at_ms=1, tasks=specs[3:6], offset=3)
    third = TasksAdded(run_id="r", chunk=2, at_ms=1, tasks=specs[6:], offset=6)
    in_order = create_run(created, 7)
    for event in (second, third):
        fold_run_event(in_order, event)
    shuffled = create_run(created, 7)
    for event in (third, second, third):  # out of order, and a chunk stored twice
        fold_run_event(shuffled, event)
    summarize(in_order)
    summarize(shuffled)
    assert msgspec.to_builtins([in_order.run, in_order.tasks, in_order.counts]) == msgspec.to_builtins(
        [shuffled.run, shuffled.tasks, shuffled.counts]
    )
    assert [t.task_index for t in sorted(in_order.tasks.values(), key=lambda t: t.task_id)] == list(range(9))
    assert in_order.run.task_count == 9 and in_order.counts == {"pending": 9}
    assert {t.run_seq for t in in_order.tasks.values()} == {7}


def _random_event(kind: str, task_id: str, attempt: int, at: int, error: TaskError) -> object:
    common = {"run_id": "r", "task_id": task_id, "at_ms": at}
    if kind == "placed":
        return AttemptPlaced(**common, attempt=attempt, node_id="n")
    if kind == "started":
        return AttemptStarted(**common, attempt=attempt, node_id="n")
    if kind == "ok":
        return AttemptSucceeded(**common, attempt=attempt, node_id="n", result=encode_value({}))
    if kind == "fail":
        return AttemptFailed(**common, attempt=attempt, error=error, node_id="n")
    if kind == "retry":
        return RetryScheduled(**common, next_attempt=attempt + 1)
    return AttemptRejected(**common, attempt=attempt, node_id="n", reason="full")


def test_counters_always_equal_a_recount() -> None:
    """Random histories (including duplicates, stale attempts and a final RunFinished): the
    incrementally kept counts equal counting the task rows."""
    import random

    from maze.projections.fold import count_states

    error = TaskError(error_type="user_code", message="x", retryable=True)
    for seed in range(200):
        rng = random.Random(seed)
        n = rng.randint(1, 12)
        model = create_run(
            RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=[_spec(f"t{i}") for i in range(n)]), 1
        )
        for step in range(rng.randint(0, 60)):
            task_id = f"t{rng.randrange(n)}"
            attempt = rng.randint(1, 3)
            kind = rng.choice(["placed", "started", "ok", "fail", "retry", "reject"])
            event = _random_event(kind, task_id, attempt, step, error)
            fold_run_event(model, event)
        if rng.random() < 0.5:
            fold_run_event(model, RunFinished(run_id="r", at_ms=99, state="failed"))
        assert {s: c for s, c in model.counts.items() if c} == count_states(model.tasks), seed
        summarize(model)
        assert json.loads(model.run.progress) == count_states(model.tasks)


def test_read_models_of_another_schema_are_dropped_to_be_rebuilt(tmp_path) -> None:
    import duckdb

    from maze.projections import db

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))  # a file written by an earlier version: no schema_version
    old.execute("CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, state VARCHAR)")
    old.execute("CREATE TABLE projection_position (stream VARCHAR PRIMARY KEY, seq BIGINT)")
    old.execute("INSERT INTO projection_position VALUES ('MAZE_RUNS', 42)")
    old.close()
    conn = db.open_db(path)
    assert db.positions(conn) == {}, "replayed from the start of the log"
    assert "run_seq" in {r[0] for r in conn.execute("DESCRIBE runs").fetchall()}
    conn.execute("INSERT INTO projection_position VALUES ('MAZE_RUNS', 7)")
    conn.close()
    assert db.positions(db.open_db(path)) == {"MAZE_RUNS": 7}, "the current schema is kept"


def test_run_rows_in_memory_equal_the_committed_rows(tmp_path) -> None:
    """GET /runs/{id} answers from the projector's in-memory copy of a run's row: after every
    committed batch it equals what DuckDB holds, and it goes when the cache lets the run go."""
    from maze.projections import db, queries
    from maze.projections.folder import Folder

    conn = db.open_db(tmp_path / "rm.duckdb")
    folder = Folder(conn, finished_rows=0)
    events = _history()
    for seq, event in enumerate(events, start=1):
        folder.commit(*folder.fold([("MAZE_RUNS", seq, [event])]))
        if event is events[-1]:
            break  # the run has finished: with no room for finished runs, its row left memory
        assert queries.run_from_row(folder.run_rows["r"]) == queries.get_run(db.cursor(conn), "r"), seq
    assert "r" not in folder.run_rows and "r" not in folder.cache
    assert queries.get_run(db.cursor(conn), "r")["state"] == "succeeded"


def test_decoded_specs_leave_nothing_for_the_cyclic_gc() -> None:
    """A 100,000-task run's specs must not keep a container per task tracked: each full collection
    would walk them all, stalling the head's event loop for ~100 ms (tuples of strings are
    untracked by the collector; lists never are)."""
    import gc

    spec = _spec("a", after=("b",))
    spec = msgspec.structs.replace(spec, outputs=("y",))
    (decoded,) = decode_events(
        encode_events([RunCreated(run_id="r", workflow_id="w", at_ms=1, tasks=[spec])])
    )[0].tasks
    gc.collect()
    tracked = [f for f in ("after", "outputs") if gc.is_tracked(getattr(decoded, f))]
    assert not tracked and not gc.is_tracked(decoded.retry.retry_on) and not gc.is_tracked(decoded)


def test_the_read_models_refuse_a_deposed_leaders_late_decision_as_the_controller_does(tmp_path) -> None:
    """After `leader.elected` with epoch 2, a decision stamped 1 changes nothing; the epoch is kept
    with the stream positions, so a projector that restarts refuses it too."""
    from maze.events.runs import LeaderElected
    from maze.projections import db, queries
    from maze.projections.folder import EPOCH_KEY, Folder

    conn = db.open_db(tmp_path / "rm.duckdb")
    folder = Folder(conn)
    created, *_ = _history()
    batch = [
        ("MAZE_RUNS", 1, [created]),
        ("MAZE_RUNS", 2, [LeaderElected(head_id="h2", epoch=2, at_ms=2)]),
    ]
    folder.commit(*folder.fold(batch))
    assert db.positions(conn)[EPOCH_KEY] == 2
    late = RunFinished(run_id="r", at_ms=3, state="failed", epoch=1)
    restarted = Folder(conn)  # the epoch comes back with the positions
    restarted.commit(*restarted.fold([("MAZE_RUNS", 3, [late])]))
    assert queries.get_run(db.cursor(conn), "r")["state"] != "failed"
    current = RunFinished(run_id="r", at_ms=4, state="failed", epoch=2)
    restarted.commit(*restarted.fold([("MAZE_RUNS", 4, [current])]))
    assert queries.get_run(db.cursor(conn), "r")["state"] == "failed"


def test_a_nodes_report_on_an_attempt_placed_elsewhere_changes_nothing_in_either_fold() -> None:
    """Node m's credentials let it write reports on its own subject; its word on an attempt placed
    on n is no report at all, for the controller and the read models alike."""
    events = _history()
    placed, started, failed = events[1], events[2], events[3]
    forged = [
        AttemptStarted(run_id="r", task_id="a", attempt=1, node_id="m", at_ms=3),
        AttemptSucceeded(
            run_id="r", task_id="a", attempt=1, node_id="m", at_ms=3, result=encode_value({"y": 9})
        ),
        AttemptRejected(run_id="r", task_id="a", attempt=1, node_id="m", at_ms=3, reason="x"),
        AttemptFailed(run_id="r", task_id="a", attempt=1, node_id="m", at_ms=3, error=failed.error),
    ]
    honest = _project([events[0], placed])
    assert _project([events[0], placed, *forged]) == honest
    run = new_run(events[0])
    apply_attempt_event(run, placed)
    for event in forged:
        assert apply_attempt_event(run, event) == []
    assert run.tasks["a"].state == "queued" and run.tasks["a"].result is None
    # the node it was placed on is heard; then m's late word on that ended attempt is not
    for event in (started, failed):
        apply_attempt_event(run, event)
    assert run.tasks["a"].state == "failed"
    after = _project([events[0], placed, started, failed])
    assert after["attempts"]["a/1"]["node_id"] == "n"
    assert _project([events[0], placed, started, failed, *forged]) == after


def test_a_worker_cannot_claim_the_controller_decided_a_failure() -> None:
    from maze.events.authority import admissible

    decided = TaskError(error_type="invalid_input", message="x", origin="controller")
    own = TaskError(error_type="user_code", message="x")
    claim = AttemptFailed(run_id="r", task_id="a", attempt=1, at_ms=1, error=decided, node_id="m")
    assert not admissible(claim, "m", "r")
    assert admissible(
        AttemptFailed(run_id="r", task_id="a", attempt=1, at_ms=1, error=own, node_id="m"), "m", "r"
    )
    assert admissible(claim, None)  # the head's own subject


def test_the_nodes_stream_refuses_a_deposed_leaders_late_node_lost_by_its_own_leadership(tmp_path) -> None:
    """A `node.lost` is judged by the latest `leader.elected` recorded in the nodes stream, not
    the runs stream's (whose order with the nodes stream differs from fold to fold): older than
    it, refused, and the node stays alive; the epoch comes back with the positions."""
    from maze.events.nodes import NodeJoined, NodeLost
    from maze.events.runs import LeaderElected
    from maze.events.specs import NodeCapacity
    from maze.projections import db
    from maze.projections.folder import EPOCH_KEY, NODES_EPOCH_KEY, Folder

    def state(conn) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        row = db.load_node(conn, "n1")
        assert row is not None
        return str(row["state"]), str(row["session"])

    def joined(session: str) -> NodeJoined:
        return NodeJoined(
            node_id="n1",
            session=session,
            at_ms=1,
            hostname="h",
            ip="127.0.0.1",
            capacity=NodeCapacity(cpus=1, memory_mb=1024),
        )

    conn = db.open_db(tmp_path / "rm.duckdb")
    folder = Folder(conn)
    folder.commit(
        *folder.fold(
            [
                ("MAZE_NODES", 1, [joined("s1")]),
                ("MAZE_RUNS", 1, [LeaderElected(head_id="h3", epoch=3, at_ms=2)]),
            ]
        )
    )
    assert db.positions(conn)[EPOCH_KEY] == 3
    # the runs stream is at epoch 3, the nodes stream has recorded no leadership yet: a node.lost
    # of epoch 2 stands (in the nodes stream's own order it came before the new leadership)
    folder.commit(*folder.fold([("MAZE_NODES", 2, [NodeLost(node_id="n1", session="s1", at_ms=3, epoch=2)])]))
    assert state(conn) == ("lost", "s1")

    folder.commit(
        *folder.fold(
            [
                ("MAZE_NODES", 3, [joined("s2")]),
                ("MAZE_NODES", 4, [LeaderElected(head_id="h3", epoch=3, at_ms=3)]),
            ]
        )
    )
    assert db.positions(conn)[NODES_EPOCH_KEY] == 3
    restarted = Folder(conn)  # the nodes stream's epoch comes back with the positions
    late = NodeLost(node_id="n1", session="s2", at_ms=4, epoch=2)
    restarted.commit(*restarted.fold([("MAZE_NODES", 5, [late])]))
    assert state(conn) == ("alive", "s2")
    current = NodeLost(node_id="n1", session="s2", at_ms=5, epoch=3)
    restarted.commit(*restarted.fold([("MAZE_NODES", 6, [current])]))
    assert state(conn) == ("lost", "s2")


def test_the_controller_judges_node_lost_by_the_nodes_streams_leadership() -> None:
    """The controller's fold alike (Scheduler.admit_node_event): the runs stream's epoch does not
    refuse a node.lost; the nodes stream's does, and its leader.elected is not folded as the runs
    stream's (which would judge the runs stream's decisions in an order no other fold shares)."""
    from maze.events.nodes import NodeJoined, NodeLost
    from maze.events.runs import LeaderElected
    from maze.events.specs import NodeCapacity
    from maze.head.scheduler import Scheduler

    core = Scheduler()
    core.apply(
        NodeJoined(
            node_id="n1",
            session="s1",
            at_ms=1,
            hostname="h",
            ip="127.0.0.1",
            capacity=NodeCapacity(cpus=1, memory_mb=1024),
        )
    )
    core.apply(LeaderElected(head_id="h3", epoch=3, at_ms=2))  # from the runs stream
    assert core.epoch == 3 and core.nodes_epoch == 0
    assert not core.admit_node_event(LeaderElected(head_id="h4", epoch=4, at_ms=3))  # the nodes stream's
    assert core.nodes_epoch == 4 and core.epoch == 3
    late = NodeLost(node_id="n1", session="s1", at_ms=4, epoch=3)
    assert not core.admit_node_event(late) and core.fenced == 1
    assert core.placer.nodes["n1"].alive
    current = NodeLost(node_id="n1", session="s1", at_ms=5, epoch=4)
    assert core.admit_node_event(current)
    core.apply(current)
    assert not core.placer.nodes["n1"].alive


def test_node_decisions_are_judged_by_the_nodes_streams_leadership_only() -> None:
    from maze.events.catalog import event_key, fenced_in_nodes, fenced_in_runs, stamp
    from maze.events.nodes import NodeLost

    lost = stamp([NodeLost(node_id="n", session="s", at_ms=1)], 2)[0]
    assert lost.epoch == 2
    assert not fenced_in_runs(lost, 5)
    assert fenced_in_nodes(lost, 3) and not fenced_in_nodes(lost, 2)
    # a new leader's declaration is its own message, not a duplicate of a deposed one's
    assert event_key(lost) != event_key(stamp([lost], 3)[0])
    assert not fenced_in_nodes(RunFinished(run_id="r", at_ms=1, state="failed", epoch=1), 5)


def _as_json(value: object) -> object:
    """What the fold's JSON text of `value` must read back as: JSON's own forms (tuples and sets as
    lists, bytes in base64, dict keys as `json.dumps` makes them: `1`, `1.5`, `true`, `null`, one
    that repeats a string key with its type after it), NaN and the infinities as null, anything
    else as a descriptor of its type (never its repr, which may hold an address)."""
    if isinstance(value, dict):
        out = {k: _as_json(v) for k, v in value.items() if isinstance(k, str)}
        for k, v in value.items():
            if not isinstance(k, str):
                text = json.dumps(k)
                out[f"{text} ({type(k).__name__})" if text in out else text] = _as_json(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, bytes):
        return msgspec.to_builtins(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"__maze_value__": "unknown", "type": f"{type(value).__module__}.{type(value).__qualname__}"}


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**70)
    | st.floats()  # NaN and the infinities included
    | st.text()  # non-ASCII included
    | st.binary(max_size=8)
    | st.builds(object)  # not JSON: written as its repr
)
_keys = (
    st.text() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans() | st.none()
)


@settings(max_examples=400, deadline=None)
@given(
    st.recursive(
        _scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(st.text(), inner, max_size=4)
            | st.dictionaries(_keys, inner, max_size=3)  # keys of mixed types too
        ),
        max_leaves=12,
    )
)
def test_the_folds_json_text_is_strict_json_of_the_value_whatever_its_dicts_order(value: object) -> None:
    from maze.projections.json_text import dumps

    text = dumps(value)
    if value is None:
        assert text is None, "no value: NULL"
        return
    assert text is not None
    assert _strict(text) == _as_json(value), text
    if isinstance(value, dict):  # the same text whichever order the dict was made in
        assert dumps(dict(reversed(list(value.items())))) == text


def test_the_folds_json_text_of_a_workers_stray_extension_value_is_the_same_at_every_decode() -> None:
    """A worker's result with an extension value inside a list (the API refuses those; a node's
    report is not checked for them): written as its descriptor, the same text each time it is
    decoded (its repr named a memory address), so a rebuild writes what the live fold wrote."""
    from msgspec.msgpack import Ext

    from maze.events.values import describe_map
    from maze.projections.json_text import dumps

    wire = msgspec.msgpack.encode({"out": [Ext(1, b"x"), Ext(99, b"abc")]})
    first, second = (dumps(describe_map(wire)[0]) for _ in range(2))
    assert first == second
    assert _strict(first or "") == {
        "out": [
            {"__maze_value__": "unknown", "code": 1, "size": 1},  # not a pickle as its code says
            {"__maze_value__": "unknown", "code": 99, "size": 3},
        ]
    }


def test_a_rejection_after_the_attempts_start_changes_nothing_in_either_fold() -> None:
    """A node that ran a deposed leader's placement of attempt 1 may report its start after the
    log's own placement of 1, then reject that placement (maze/workers/worker.py _superseded): the
    attempt goes on as started, in the controller's fold and the read models alike."""
    events = _history()
    created, placed, started = events[0], events[1], events[2]
    rejected = AttemptRejected(
        run_id="r", task_id="a", attempt=1, node_id="n", at_ms=3, reason="superseded", placed_epoch=2
    )
    assert _project([created, placed, started, rejected]) == _project([created, placed, started])
    run = new_run(created)
    for event in (placed, started):
        apply_attempt_event(run, event)
    assert apply_attempt_event(run, rejected) == [] and run.tasks["a"].state == "running"
    # before the start, it takes effect: back to be placed again
    assert _project([created, placed, rejected])["attempts"]["a/1"]["state"] == "rejected"


def test_a_rejection_names_the_leadership_it_answers_in_its_message_id() -> None:
    """Two rejections of one attempt number, of two leaderships' placements, are two messages (the
    second is not dropped as a duplicate of the first)."""
    from maze.events.catalog import event_key

    def rejected(epoch: int) -> AttemptRejected:
        return AttemptRejected(
            run_id="r", task_id="a", attempt=1, node_id="n", at_ms=1, reason="x", placed_epoch=epoch
        )

    assert event_key(rejected(2)) != event_key(rejected(3))
    assert event_key(rejected(0)) == "r/a/1/attempt.rejected"
