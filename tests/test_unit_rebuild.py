"""The rebuild's bulk fold (maze/projections/bulk.py) writes the same tables as the live projector's
batch-by-batch upserts: on the recorded histories, and on a history whose runs the cache lets go of
and that come back (late reports, a run.created written twice, a run that lives across flushes).
And its comparison and swap of the tables (maze/projections/rebuild.py)."""

from __future__ import annotations

import gc
from pathlib import Path

import duckdb
import msgspec
import pytest

from maze.core.errors import Conflict
from maze.events.codec import decode_events, encode_value
from maze.events.nodes import NodeCapacity, NodeJoined, NodeLost
from maze.events.runs import LeaderElected, RunCreated, RunFinished, TasksAdded
from maze.events.specs import InputRef, InputValue, TaskError, TaskSpec
from maze.events.tasks import AttemptFailed, AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.projections import db
from maze.projections.bulk import BulkFolder, gc_paused
from maze.projections.folder import Folder
from maze.projections.schema import TABLES

GOLDEN = Path(__file__).parent / "golden"
Batch = list[tuple[str, int, list]]


def _tables(conn) -> dict[str, list]:
    out = {t: db.table_rows(conn, t) for t in TABLES}
    out["projection_position"] = conn.execute("SELECT * FROM projection_position ORDER BY ALL").fetchall()
    return out


def _live(tmp_path: Path, batches: list[Batch]) -> dict[str, list]:
    conn = db.open_db(tmp_path / "live.duckdb")
    folder = Folder(conn, finished_rows=0)  # the live projector, letting every finished run go
    for batch in batches:
        folder.commit(*folder.fold(batch))
    return _tables(conn)


def _bulk(
    tmp_path: Path, batches: list[Batch], flush_rows: int, finished_rows: int, keys: bool = True
) -> dict[str, list]:
    """The bulk fold's tables; `keys=False`: into tables without primary keys, as a rebuild's
    shards write (rows of a run written before are then replaced by the loader alone)."""
    conn = db.open_db(tmp_path / f"bulk-{flush_rows}-{finished_rows}.duckdb", keys=keys)
    folder = BulkFolder(conn, finished_rows=finished_rows, flush_rows=flush_rows)
    for batch in batches:
        folder.commit(*folder.fold(batch))
    folder.finish()
    assert not list(tmp_path.glob("bulk-*/")), "the scratch files are gone"
    if finished_rows < 3:  # the cache let written runs go: they were read back when folded again
        assert len(folder.cache) < len(folder.written)
    return _tables(conn)


@pytest.mark.parametrize("history", ["history.msgpack", "lifecycle.msgpack", "operations.msgpack"])
def test_the_bulk_fold_of_a_recorded_history_equals_the_live_one(tmp_path, history: str) -> None:
    messages = msgspec.msgpack.decode((GOLDEN / history).read_bytes())
    batches = [[(m["stream"], m["seq"], decode_events(m["data"]))] for m in messages]
    live = _live(tmp_path, batches)
    assert live["runs"], "the history has runs"
    for flush_rows, finished_rows in [(1, 0), (3, 2), (10_000, 200_000)]:
        assert _bulk(tmp_path, batches, flush_rows, finished_rows) == live, (flush_rows, finished_rows)


def _spec(task_id: str, inputs: dict | None = None) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        name=f"step {task_id}",
        func_name="f",
        func_hash="0" * 64,
        call_style="kwargs",
        inputs=inputs or {"x": InputValue(data=encode_value(task_id))},
        outputs=("y",),
    )


def _lifelike_events() -> list[tuple[str, object]]:
    """Runs that finish while a long one goes on; reports arriving after their run ended; a
    run.created written twice; a node that joins and is lost; a change of leadership."""
    events: list[tuple[str, object]] = [
        (
            "MAZE_NODES",
            NodeJoined(
                node_id="n",
                session="s",
                hostname="h",
                ip="1.2.3.4",
                capacity=NodeCapacity(cpus=2, memory_mb=1024),
                at_ms=1,
            ),
        ),
        ("MAZE_RUNS", RunCreated(run_id="long", workflow_id="wf-long", at_ms=1, tasks=[_spec("a")])),
    ]
    for i in range(12):
        run = f"r{i}"
        key = {"run_id": run, "task_id": "t", "attempt": 1, "node_id": "n"}
        events += [
            ("MAZE_RUNS", RunCreated(run_id=run, workflow_id=f"wf-{i}", at_ms=10 + i, tasks=[_spec("t")])),
            ("MAZE_RUNS", AttemptPlaced(**key, at_ms=11 + i, session="s", reason="fits")),
            ("MAZE_RUNS", AttemptStarted(**key, at_ms=12 + i)),
        ]
        if i % 3:
            events.append(("MAZE_RUNS", AttemptSucceeded(**key, at_ms=13 + i, result=encode_value({"y": i}))))
            events.append(("MAZE_RUNS", RunFinished(run_id=run, at_ms=14 + i, state="succeeded")))
        else:
            error = TaskError(error_type="user_code", message="boom", origin="task")
            events.append(("MAZE_RUNS", AttemptFailed(**key, at_ms=13 + i, error=error)))
            events.append(("MAZE_RUNS", RunFinished(run_id=run, at_ms=14 + i, state="failed", error=error)))
        if i == 5:
            events.append(("MAZE_RUNS", LeaderElected(head_id="h2", epoch=2, at_ms=20)))
            events.append(("MAZE_NODES", LeaderElected(head_id="h2", epoch=2, at_ms=20)))
    for i in range(12):  # late: a report on an ended attempt, the run.created again, a stale decision
        key = {"run_id": f"r{i}", "task_id": "t", "attempt": 1, "node_id": "n"}
        events.append(("MAZE_RUNS", AttemptSucceeded(**key, at_ms=50 + i, result=encode_value({"y": -1}))))
        events.append(
            ("MAZE_RUNS", RunCreated(run_id=f"r{i}", workflow_id="again", at_ms=60, tasks=[_spec("t")]))
        )
        events.append(("MAZE_RUNS", RunFinished(run_id=f"r{i}", at_ms=61, state="cancelled", epoch=1)))
    long_key = {"run_id": "long", "task_id": "a", "attempt": 1, "node_id": "n"}
    events += [
        (
            "MAZE_RUNS",
            TasksAdded(
                run_id="long",
                chunk=1,
                at_ms=69,
                offset=1,
                tasks=[_spec("b", {"x": InputRef(task_id="a", key="y")})],
            ),
        ),
        ("MAZE_RUNS", AttemptPlaced(**long_key, at_ms=70, session="s", reason="fits", epoch=2)),
        ("MAZE_NODES", NodeLost(node_id="n", session="s", at_ms=71, epoch=2)),
        ("MAZE_RUNS", RunFinished(run_id="long", at_ms=72, state="failed", epoch=2)),
    ]
    return events


def _lifelike_history() -> list[Batch]:
    events = _lifelike_events()
    seqs = {"MAZE_RUNS": 0, "MAZE_NODES": 0}
    batches: list[Batch] = []
    for stream, event in events:
        seqs[stream] += 1
        if not batches or len(batches[-1]) == 4:
            batches.append([])
        batches[-1].append((stream, seqs[stream], [event]))
    return batches


@pytest.mark.parametrize("keys", [True, False])
@pytest.mark.parametrize(("flush_rows", "finished_rows"), [(1, 0), (2, 3), (5, 1), (100_000, 200_000)])
def test_the_bulk_fold_equals_the_live_one_when_runs_are_let_go_of_and_come_back(
    tmp_path, flush_rows: int, finished_rows: int, keys: bool
) -> None:
    batches = _lifelike_history()
    live = _live(tmp_path, batches)
    assert {r[3] for r in live["runs"]} == {"succeeded", "failed"}, "the late decisions were refused"
    assert _bulk(tmp_path, batches, flush_rows, finished_rows, keys) == live


def test_a_bulk_fold_wants_a_fresh_file(tmp_path) -> None:
    conn = db.open_db(tmp_path / "rm.duckdb")
    Folder(conn).commit(*Folder(conn).fold(_lifelike_history()[0]))
    with pytest.raises(Conflict, match="fresh"):
        BulkFolder(conn)


def test_the_collector_is_paused_only_while_asked_and_stays_off_if_it_was() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled(), "left as it was found"
    finally:
        gc.enable()


def _live_beside_rebuilt(tmp_path: Path) -> tuple[duckdb.DuckDBPyConnection, Path]:
    """The live projector's file of a lifelike history, with the bulk fold's file of the same
    history attached as `rebuilt`: equal, as the compare says."""
    from maze.projections.rebuild import compare

    batches = _lifelike_history()
    _live(tmp_path, batches)
    rebuilt = tmp_path / "bulk-1-0.duckdb"
    _bulk(tmp_path, batches, 1, 0)
    live = db.open_db(tmp_path / "live.duckdb")
    live.execute(f"ATTACH '{rebuilt}' AS rebuilt (READ_ONLY)")
    assert compare(live)["equal"] is True
    return live, rebuilt


def test_compare_finds_a_changed_a_missing_and_an_extra_row_and_swap_makes_the_live_tables_equal(
    tmp_path,
) -> None:
    from maze.projections.rebuild import compare, swap

    live, rebuilt = _live_beside_rebuilt(tmp_path)
    live.execute("UPDATE tasks SET result = '{}' WHERE run_id = 'r1'")
    live.execute("DELETE FROM attempts WHERE run_id = 'r2'")
    live.execute("INSERT INTO nodes (node_id, session, state) VALUES ('ghost', 's', 'alive')")
    report = compare(live)
    assert report["equal"] is False
    assert {t for t, r in report["tables"].items() if not r["equal"]} == {"tasks", "attempts", "nodes"}
    assert report["tables"]["attempts"]["rows"] == report["tables"]["attempts"]["rebuilt_rows"] - 1
    live.execute("UPDATE projection_position SET seq = 1")
    swap(live)
    assert compare(live)["equal"] is True
    assert db.positions(live) == dict(live.execute("SELECT * FROM rebuilt.projection_position").fetchall())
    live.execute("DETACH rebuilt")
    assert _tables(live) == _tables(db.open_db(rebuilt)), "primary keys and all"
    live.execute("INSERT OR REPLACE INTO runs SELECT * FROM runs LIMIT 1")  # needs the primary key back


def test_compare_tells_rows_whose_values_moved_between_rows_and_columns(tmp_path) -> None:
    """The compare's fingerprint (one sum of row hashes a side) against changes that keep every
    count and every column's set of values: two rows trading a value, one row's two columns
    trading theirs."""
    from maze.projections.rebuild import compare

    live, _ = _live_beside_rebuilt(tmp_path)
    r1, r2 = (
        live.execute(f"SELECT workflow_id FROM runs WHERE run_id = '{r}'").fetchone()[0] for r in ("r1", "r2")
    )
    assert r1 != r2
    live.execute("UPDATE runs SET workflow_id = ? WHERE run_id = 'r1'", [r2])
    live.execute("UPDATE runs SET workflow_id = ? WHERE run_id = 'r2'", [r1])
    report = compare(live)
    assert report["equal"] is False and not report["tables"]["runs"]["equal"]
    assert report["tables"]["runs"]["rows"] == report["tables"]["runs"]["rebuilt_rows"]
    live.execute("UPDATE runs SET workflow_id = ? WHERE run_id = 'r1'", [r1])
    live.execute("UPDATE runs SET workflow_id = ? WHERE run_id = 'r2'", [r2])
    assert compare(live)["equal"] is True
    live.execute("UPDATE runs SET workflow_id = run_id, run_id = workflow_id WHERE run_id = 'r1'")
    assert compare(live)["tables"]["runs"]["equal"] is False
    # two rows trading the values of the last column (DuckDB's hash takes the last one unmixed)
    (ra, a, ia), (rb, b, ib) = live.execute(
        "SELECT run_id, task_id, task_index FROM tasks ORDER BY run_id, task_id LIMIT 2"
    ).fetchall()
    assert ia != ib
    live.execute("UPDATE tasks SET task_index = ? WHERE run_id = ? AND task_id = ?", [ib, ra, a])
    live.execute("UPDATE tasks SET task_index = ? WHERE run_id = ? AND task_id = ?", [ia, rb, b])
    assert compare(live)["tables"]["tasks"]["equal"] is False


def test_a_swap_whose_rebuilt_keys_repeat_fails_whole_and_leaves_the_live_tables(tmp_path) -> None:
    from maze.projections.rebuild import swap

    batches = _lifelike_history()
    before = _live(tmp_path, batches)
    _bulk(tmp_path, batches, 1, 0, keys=False)
    rebuilt = tmp_path / "bulk-1-0.duckdb"
    shard = db.open_db(rebuilt, keys=False)
    shard.execute("INSERT INTO runs SELECT * FROM runs LIMIT 1")  # one run twice
    shard.close()
    live = db.open_db(tmp_path / "live.duckdb")
    live.execute(f"ATTACH '{rebuilt}' AS rebuilt (READ_ONLY)")
    with pytest.raises(duckdb.Error, match="duplicate key"):
        swap(live)
    live.execute("DETACH rebuilt")
    assert _tables(live) == before
    live.execute("INSERT OR REPLACE INTO runs SELECT * FROM runs LIMIT 1")  # the keys are still there
