"""Runs of any width against nats-server's default 1 MB max_payload: a 20,000-task run (7 MB of
task specs, refused before) is recorded in chunks, runs, and stays inspectable page by page; reads
see the caller's own writes without waiting for anyone else's."""

from __future__ import annotations

import httpx

from maze import MaClient, task
from tests.helpers import HeadProcess

WIDE = 20_000


@task
def square(x: int = 0):
    return {"y": x * x}


@task
def total(values: list | None = None):
    return {"sum": sum(values or [])}


def test_a_20000_task_run_is_recorded_in_chunks_runs_and_stays_inspectable(
    client: MaClient, head: HeadProcess
) -> None:
    wf = client.create_workflow()
    tasks = [wf.add_task(square, inputs={"x": i}) for i in range(WIDE)]
    run_id = wf.run()
    messages = wf.get_results(run_id, verbose=False)
    assert messages[-1]["type"] == "finish_workflow" and messages[-1]["data"]["state"] == "succeeded"
    finished = {m["data"]["task_id"]: m["data"]["result"] for m in messages if m["type"] == "finish_task"}
    assert len(finished) == WIDE and finished[tasks[1234].task_id] == {"y": 1234 * 1234}

    events = client.get_run_events(run_id)
    chunks = [e for e in events if e["type"] in ("run.created", "tasks.added")]
    assert chunks[0]["type"] == "run.created" and chunks[0]["task_count"] == WIDE
    assert len(chunks) == chunks[0]["chunks"] > 1
    assert sum(len(c["tasks"]) for c in chunks) == WIDE

    run = client.get_run(run_id)
    assert run["state"] == "succeeded" and run["task_count"] == WIDE
    assert run["progress"] == {"succeeded": WIDE} and run["tasks_succeeded"] == WIDE

    page = httpx.get(f"{head.url}/runs/{run_id}/tasks", params={"limit": 7000, "offset": 0})
    assert page.status_code == 200 and page.headers["x-total-count"] == str(WIDE)
    rows = page.json()
    assert [r["task_index"] for r in rows] == list(range(7000))
    assert [r["task_id"] for r in rows[:3]] == [t.task_id for t in tasks[:3]]  # submission order
    assert "offset=7000" in page.headers["link"] and 'rel="next"' in page.headers["link"]
    last = httpx.get(f"{head.url}/runs/{run_id}/tasks", params={"limit": 7000, "offset": 14000})
    assert len(last.json()) == WIDE - 14000 and "link" not in last.headers
    too_big = httpx.get(f"{head.url}/runs/{run_id}/tasks", params={"limit": 10_001})
    assert too_big.status_code == 400

    every = client.get_run_tasks(run_id)  # the SDK pages through all of them
    assert len(every) == WIDE and len({t["task_id"] for t in every}) == WIDE
    assert client.get_run_tasks(run_id, limit=5, offset=10) == every[10:15]


def test_a_fan_in_over_many_results_gets_them_all(client: MaClient) -> None:
    wf = client.create_workflow()
    parts = [wf.add_task(square, inputs={"x": i}) for i in range(300)]

    @task
    def gather(**values: int):
        return {"sum": sum(v for v in values.values())}

    joined = wf.add_task(gather, inputs={f"v{i}": p.outputs["y"] for i, p in enumerate(parts)})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "succeeded", summary
    assert summary["task_results"][joined.task_id] == {"sum": sum(i * i for i in range(300))}


def test_a_read_sees_the_callers_own_write_and_never_misses_an_accepted_run(
    client: MaClient, head: HeadProcess
) -> None:
    wf = client.create_workflow()
    wf.add_task(square, inputs={"x": 3})
    run_id = wf.run()
    # the SDK passes the seq its submit returned: its next read includes the run
    assert client.http.session.seen_seq > 0
    assert client.get_run(run_id)["run_id"] == run_id
    # a client that knows nothing of the run is never told 404 for it while the log has it
    fresh = httpx.get(f"{head.url}/runs/{run_id}")
    assert fresh.status_code == 200 and fresh.json()["run_id"] == run_id
    assert httpx.get(f"{head.url}/runs/run_never_submitted").status_code == 404
    bad = httpx.get(f"{head.url}/runs/{run_id}", params={"min_seq": -1})
    assert bad.status_code == 400


async def test_a_read_waits_only_for_the_position_its_caller_names(
    nats_server, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The read barrier against a real (not started, so never advancing) projector, asked over
    the read models' socket as the head asks: without `min_seq` a read never waits; with one past
    what is projected it waits, bounded, then the head gets the same 503 Unavailable; with one past
    the end of the log itself, waiting cannot help: a 409 Conflict at once."""
    import asyncio

    import nats
    import pytest

    from maze.core.errors import Conflict, Unavailable
    from maze.events import subjects
    from maze.events.store import ensure_streams
    from maze.projections import service
    from maze.projections.client import ReadModels
    from maze.projections.projector import Projector

    monkeypatch.setattr(service, "READ_BARRIER_S", 0.3)
    nc = await nats.connect(nats_server.url)
    try:
        await ensure_streams(nc.jetstream())
        projector = Projector(nc, tmp_path / "rm.duckdb")
        sock = tmp_path / "rm.sock"
        listener = await asyncio.start_unix_server(service.ReadModelServer(projector).serve, path=str(sock))
        models = ReadModels(sock)
        # the projector never moves: a barrier that waited would end in Unavailable
        assert await models.call("list_runs", 10, 0, None) == []
        assert await models.call("list_runs", 10, 0, None, min_seq=0) == []
        ack = await nc.jetstream().publish(subjects.run_subject("run_unprojected"), b"not folded")
        with pytest.raises(Unavailable, match="catching up"):
            await models.call("list_runs", 10, 0, None, min_seq=ack.seq)
        with pytest.raises(Conflict, match="past the end of the event log") as past:
            await models.call("list_runs", 10, 0, None, min_seq=ack.seq + 1)
        assert past.value.details == {"min_seq": ack.seq + 1, "last_seq": ack.seq}
        models.close()
        listener.close()
        await projector.stop()
    finally:
        await nc.close()


async def test_query_threads_keep_a_cursor_each_and_the_projectors_stop_closes_them(
    nats_server, tmp_path
) -> None:
    """Each query thread keeps one cursor (made once: `USE`ing the read models costs ~0.1 ms); the
    projector's stop closes them all with the file, which another process can then open."""
    import subprocess
    import sys
    import threading

    import duckdb
    import nats
    import pytest

    from maze.events.store import ensure_streams
    from maze.projections.projector import Projector

    nc = await nats.connect(nats_server.url)
    try:
        await ensure_streams(nc.jetstream())
        path = tmp_path / "rm.duckdb"
        projector = Projector(nc, path)
        mine = projector.thread_cursor()
        assert projector.thread_cursor() is mine
        other: list = []
        thread = threading.Thread(target=lambda: other.append(projector.thread_cursor()))
        thread.start()
        thread.join()
        assert other[0] is not mine
        assert other[0].execute("SELECT count(*) FROM runs").fetchone() == (0,), "on the read models"
        projector.start()
        await projector.stop()
        for cursor in (mine, other[0]):
            with pytest.raises(duckdb.ConnectionException):
                cursor.execute("SELECT 1")
        opened = subprocess.run(
            [sys.executable, "-c", f"import duckdb; duckdb.connect({str(path)!r}).close()"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert opened.returncode == 0, opened.stderr
    finally:
        await nc.close()
