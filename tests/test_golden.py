"""Recorded histories (tests/golden, made by tests/golden/record.py) must still decode, fold into
the same read models, and replay through the run controller to the same outcome."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import nats

from maze.core.settings import Settings
from maze.events import subjects
from maze.events.codec import decode_events
from maze.events.store import EventStore
from maze.head.controller import RunController
from maze.projections import db
from maze.projections.folder import Folder
from maze.projections.schema import TABLES
from tests.helpers import NatsServer

GOLDEN = Path(__file__).parent / "golden"


def _history() -> list[dict]:
    return msgspec.msgpack.decode((GOLDEN / "history.msgpack").read_bytes())


def test_golden_history_folds_into_the_recorded_read_models(tmp_path) -> None:
    conn = db.open_db(tmp_path / "replayed.duckdb")
    folder = Folder(conn)
    batch = [(m["stream"], m["seq"], decode_events(m["data"])) for m in _history()]
    folder.commit(*folder.fold(batch))
    expected = json.loads((GOLDEN / "readmodels.json").read_text())
    for table in TABLES:
        rows = [list(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()]
        assert json.loads(json.dumps(rows, default=str)) == expected[table], table


async def test_golden_history_replays_through_the_controller(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        controller = RunController(nc, EventStore(nc), Settings())
        for message in _history():
            for event in decode_events(message["data"]):
                controller.apply(event)
        assert controller.runs == {}, "every recorded run ended, so none is active after replay"
        assert len(controller.done_runs) == 2
        assert controller.placer.reservations == {}, "every placed attempt was released"
        assert list(controller.placer.nodes) == ["golden-node"]
        streams = {m["stream"] for m in _history()}
        assert streams == {subjects.RUNS_STREAM, subjects.NODES_STREAM}
    finally:
        await nc.close()


# ---- the second history: a rejection, retries, a node lost under a started and a queued attempt --
def _lifecycle() -> list[dict]:
    return msgspec.msgpack.decode((GOLDEN / "lifecycle.msgpack").read_bytes())


def test_lifecycle_history_folds_into_the_recorded_read_models(tmp_path) -> None:
    conn = db.open_db(tmp_path / "lifecycle.duckdb")
    folder = Folder(conn)
    folder.commit(*folder.fold([(m["stream"], m["seq"], decode_events(m["data"])) for m in _lifecycle()]))
    expected = json.loads((GOLDEN / "lifecycle_readmodels.json").read_text())
    for table in TABLES:
        rows = [list(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()]
        assert json.loads(json.dumps(rows, default=str)) == expected[table], table
    from maze.projections import queries

    cur = db.cursor(conn)
    assert queries.get_run(cur, "run_lifecycle")["state"] == "succeeded"
    attempts = {
        t: [
            (a["state"], (a["error"] or {}).get("error_type"))
            for a in queries.get_task(cur, "run_lifecycle", t)["attempts"]
        ]
        for t in "abc"
    }
    assert attempts == {
        "a": [("rejected", None), ("failed", "user_code"), ("succeeded", None)],
        "b": [("lost", None), ("succeeded", None)],
        "c": [("failed", "node_lost"), ("succeeded", None)],
    }
    failures = {t: queries.get_task(cur, "run_lifecycle", t)["failures"] for t in "abc"}
    assert failures == {"a": 1, "b": 0, "c": 1}, "a rejection, or a loss before the start, is no failure"


def test_lifecycle_history_replays_through_the_controller_in_either_stream_order() -> None:
    from maze.head.scheduler import Scheduler
    from maze.head.snapshot import fingerprint

    messages = _lifecycle()
    cores = []
    for order in (messages, sorted(messages, key=lambda m: m["stream"] != subjects.NODES_STREAM)):
        core = Scheduler()
        for message in order:
            for event in decode_events(message["data"]):
                core.apply_from(message["stream"], event)
        assert core.runs == {} and "run_lifecycle" in core.done_runs
        assert core.placer.reservations == {} and core.placer.orphans == {}
        assert core.delivery.awaiting == {}
        assert {n: v.session for n, v in core.placer.nodes.items()} == {"n1": "s1-new", "n2": "s2-2"}
        cores.append(core)
    assert fingerprint(cores[0]) == fingerprint(cores[1])


# ---- the third history: a cancel, a run timeout, a failed-only retry (tests/golden/record_operations.py)
def _operations() -> list[dict]:
    return msgspec.msgpack.decode((GOLDEN / "operations.msgpack").read_bytes())


def test_operations_history_folds_into_the_recorded_read_models(tmp_path) -> None:
    conn = db.open_db(tmp_path / "operations.duckdb")
    folder = Folder(conn)
    folder.commit(*folder.fold([(m["stream"], m["seq"], decode_events(m["data"])) for m in _operations()]))
    expected = json.loads((GOLDEN / "operations_readmodels.json").read_text())
    for table in TABLES:
        rows = [list(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()]
        assert json.loads(json.dumps(rows, default=str)) == expected[table], table
    states = dict(conn.execute("SELECT run_id, state FROM runs").fetchall())
    assert states == {"run_c": "cancelled", "run_t": "timed_out", "run_r": "succeeded"}
    tasks = dict(conn.execute("SELECT task_id, state FROM tasks WHERE run_id = 'run_r'").fetchall())
    assert tasks == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}


def test_operations_history_replays_through_the_controller() -> None:
    from maze.head.scheduler import Scheduler

    core = Scheduler(queue_factor=1.0)
    for message in _operations():
        for event in decode_events(message["data"]):
            core.apply_from(message["stream"], event)
    assert dict(core.done_runs) == {"run_c": "cancelled", "run_t": "timed_out", "run_r": "succeeded"}
    assert core.runs == {} and core.placer.reservations == {}, "nothing outlives the runs"
