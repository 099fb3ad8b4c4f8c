"""Followers end to end (maze/head/followers.py, maze/workers/follow.py): a chain placed at once on
one node flows without a controller round trip per edge, in log order; a failed link's followers
are recorded lost and come again with its retry; a follower whose input is missing fails on its
node; a cancelled run's followers never start; the read models rebuild equal. Real head,
nats-server and task processes."""

from __future__ import annotations

import itertools
import time

import httpx

from maze import MaClient, task
from tests.helpers import HeadProcess, wait_until


@task
def step(x: int = 0) -> dict:
    return {"x": x + 1}


@task(max_retries=2, retry_backoff_seconds=0)
def flaky_once(x: int = 0, marker: str = "") -> dict:
    from pathlib import Path

    seen = Path(marker)
    if not seen.exists():
        seen.write_text("failed once")
        raise RuntimeError("the first attempt fails")
    return {"x": x + 1}


@task
def returns_y(x: int = 0) -> dict:
    out = {}  # keys the SDK cannot read ahead: it lets `outputs["x"]` be wired
    out["y"] = x
    return out


@task
def sleeps(x: int = 0, seconds: float = 0.0) -> dict:
    import time

    time.sleep(seconds)
    return {"x": x + 1}


def _events(client: MaClient, run_id: str) -> list[dict]:
    return client.get_run_events(run_id)


def _in_log_order(events: list[dict], ids: list[str]) -> None:
    """Each task's start and end come after its upstream's success, in the log."""
    ended_at = {e["task_id"]: e["seq"] for e in events if e["type"] == "attempt.succeeded"}
    for up, down in itertools.pairwise(ids):
        reports = [
            e["seq"]
            for e in events
            if e.get("task_id") == down
            and e["type"] in ("attempt.started", "attempt.succeeded", "attempt.failed")
        ]
        assert reports and min(reports) > ended_at[up], (up, down, events)


def test_a_chain_is_placed_with_its_head_and_flows_in_log_order(client: MaClient) -> None:
    wf = client.create_workflow()
    tasks = [wf.add_task(step, inputs={"x": 0})]
    for _ in range(5):
        tasks.append(wf.add_task(step, inputs={"x": tasks[-1].outputs["x"]}))
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded" and summary["task_results"][tasks[-1].task_id] == {"x": 6}
    events = _events(client, run_id)
    created = next(e for e in events if e["type"] == "run.created")
    placed = [e for e in events if e["type"] == "attempt.placed"]
    ids = [t.task_id for t in tasks]
    assert [p["task_id"] for p in placed] == ids  # one placement each: no second decision
    assert all(p["seq"] == created["seq"] for p in placed)  # all in the run's first message
    assert [p["reason"].startswith("follows") for p in placed] == [False] + [True] * 5
    _in_log_order(events, ids)
    rows = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
    assert {rows[i]["state"] for i in ids} == {"succeeded"}


def test_a_failed_link_voids_its_followers_and_they_come_with_its_retry(client: MaClient, tmp_path) -> None:
    wf = client.create_workflow()
    a = wf.add_task(step, inputs={"x": 0})
    b = wf.add_task(flaky_once, inputs={"x": a.outputs["x"], "marker": str(tmp_path / "seen")})
    c = wf.add_task(step, inputs={"x": b.outputs["x"]})
    d = wf.add_task(step, inputs={"x": c.outputs["x"]})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded" and summary["task_results"][d.task_id] == {"x": 4}
    events = _events(client, run_id)
    lost = [(e["task_id"], e["attempt"]) for e in events if e["type"] == "attempt.lost"]
    assert lost == [(c.task_id, 1), (d.task_id, 1)]
    started = [(e["task_id"], e["attempt"]) for e in events if e["type"] == "attempt.started"]
    assert (c.task_id, 1) not in started and (d.task_id, 1) not in started  # never ran
    rows = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
    assert rows[c.task_id]["attempt"] == 2 and rows[c.task_id]["state"] == "succeeded"
    _in_log_order(events, [a.task_id, b.task_id, c.task_id, d.task_id])


def test_a_follower_reading_an_output_its_upstream_lacks_fails_on_its_node(client: MaClient) -> None:
    wf = client.create_workflow()
    a = wf.add_task(returns_y, inputs={"x": 1})
    b = wf.add_task(step, inputs={"x": a.outputs["x"]})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "failed" and summary["exception_tasks"] == [b.task_id]
    row = {t["task_id"]: t for t in client.get_run_tasks(run_id)}[b.task_id]
    assert row["error"]["error_type"] == "invalid_input"
    assert "refers to output 'x'" in row["error"]["message"] and "['y']" in row["error"]["message"]


def test_a_cancelled_runs_followers_never_start(client: MaClient, head: HeadProcess) -> None:
    wf = client.create_workflow()
    a = wf.add_task(sleeps, inputs={"x": 0, "seconds": 30.0})
    b = wf.add_task(step, inputs={"x": a.outputs["x"]})
    run_id = wf.run()

    def once_a_runs() -> dict | None:
        rows = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
        return rows if rows[a.task_id]["state"] == "running" else None

    rows = wait_until(once_a_runs, timeout=10)
    assert rows[b.task_id]["state"] == "queued"  # placed as a follower, waiting in a's slot
    client.cancel_run(run_id, reason="enough")
    summary = wf.show_results(run_id)
    assert summary["state"] == "cancelled"
    events = _events(client, run_id)
    assert not [e for e in events if e.get("task_id") == b.task_id and e["type"] == "attempt.started"]
    rows = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
    assert rows[b.task_id]["state"] == "cancelled"
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=60).json()
    assert report["equal"] is True, report


@task
def fails_now(x: int = 0) -> dict:
    raise RuntimeError("this one fails")


def test_a_run_failing_elsewhere_never_runs_the_followers_it_held(
    client: MaClient, head: HeadProcess
) -> None:
    wf = client.create_workflow()
    a = wf.add_task(sleeps, inputs={"x": 0, "seconds": 3.0})  # ends well after the run failed
    b = wf.add_task(step, inputs={"x": a.outputs["x"]})
    wf.add_task(fails_now, inputs={"x": 0})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "failed"
    # a ends after the run did: its node dropped the follower held after it, which never starts
    wait_until(
        lambda: any(
            e.get("task_id") == a.task_id and e["type"] == "attempt.succeeded"
            for e in _events(client, run_id)
        ),
        timeout=30,
        interval=0.1,
    )
    time.sleep(0.5)  # (what b would report would come right after a's success)
    events = _events(client, run_id)
    assert [(e["type"], e["attempt"]) for e in events if e.get("task_id") == b.task_id] == [
        ("attempt.placed", 1),
        ("attempt.lost", 1),
    ]
    row = {t["task_id"]: t for t in client.get_run_tasks(run_id)}[b.task_id]
    assert row["state"] == "cancelled" and "not run" in row["error"]["message"]
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=60).json()
    assert report["equal"] is True, report
