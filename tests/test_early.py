"""A new run's first attempts start on the head's own worker while its message is stored
(maze/api/early.py): a short run is one message (its creation, placements, starts, results and end),
a longer task's reports come after its run's message, and the same request sent twice at once makes
one run with one success per task. Real head, nats-server and task processes; the read models
rebuild equal."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, NatsServer, wait_until


@task
def step(x: int = 0) -> dict:
    return {"x": x + 1}


@task
def sleeps(x: int = 0, seconds: float = 0.0) -> dict:
    import time

    time.sleep(seconds)
    return {"x": x + 1}


@pytest.fixture(scope="module")
def head(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """The run's message waits up to 300 ms for its attempts here (2 ms by default): a no-op ends
    well within it even on a loaded machine, so what joins the message is not left to timing. Work
    placed and not started is sent again only after 60 s: none of these runs may need that."""
    proc = HeadProcess(
        tmp_path_factory.mktemp("head"),
        nats_url=nats_server.url,
        extra=["--cpus", "4", "--work-resend", "60"],
    )
    proc.env = {"MAZE_EARLY_LINGER_MS": "300"}
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log()


def _kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e.get("task_id", "")) for e in events]


def test_a_one_task_run_is_one_message(client: MaClient, head: HeadProcess) -> None:
    wf = client.create_workflow()
    t = wf.add_task(step, inputs={"x": 1})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded" and summary["task_results"][t.task_id] == {"x": 2}
    events = client.get_run_events(run_id)
    assert _kinds(events) == [
        ("run.created", ""),
        ("attempt.placed", t.task_id),
        ("attempt.started", t.task_id),
        ("attempt.succeeded", t.task_id),
        ("run.finished", ""),
    ]
    assert len({e["seq"] for e in events}) == 1  # one write
    started = events[2]
    assert started["pid"] > 0 and started["node_id"] == events[1]["node_id"]
    assert events[-1]["state"] == "succeeded"
    run = client.get_run(run_id)
    assert run["state"] == "succeeded" and run["started_at_ms"] <= run["finished_at_ms"]
    (attempt,) = client.get_run_task(run_id, t.task_id)["attempts"]
    assert attempt["state"] == "succeeded" and attempt["pid"] == started["pid"]


def test_a_short_chain_is_one_message_in_chain_order(client: MaClient) -> None:
    wf = client.create_workflow()
    tasks = [wf.add_task(step, inputs={"x": 0})]
    for _ in range(2):
        tasks.append(wf.add_task(step, inputs={"x": tasks[-1].outputs["x"]}))
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded" and summary["task_results"][tasks[-1].task_id] == {"x": 3}
    events = client.get_run_events(run_id)
    assert len({e["seq"] for e in events}) == 1
    ids = [t.task_id for t in tasks]
    reports = [
        (kind, tid) for kind, tid in _kinds(events) if kind in ("attempt.started", "attempt.succeeded")
    ]
    assert reports == [(kind, tid) for tid in ids for kind in ("attempt.started", "attempt.succeeded")]
    assert _kinds(events)[-1] == ("run.finished", "")


def test_a_longer_task_reports_after_its_run_message(client: MaClient) -> None:
    wf = client.create_workflow()
    wf.add_task(sleeps, inputs={"x": 0, "seconds": 1.0})  # past the 300 ms the message waits
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "succeeded"
    events = client.get_run_events(run_id)
    first = events[0]["seq"]
    assert [(e["type"], e["seq"] == first) for e in events] == [
        ("run.created", True),
        ("attempt.placed", True),
        ("attempt.started", False),  # (its start, held a few ms, then behind the stored message)
        ("attempt.succeeded", False),
        ("run.finished", False),
    ]


def _body_of(wf: Any) -> dict[str, Any]:
    """The body `wf.run()` would submit (not sent)."""
    bodies: list[dict[str, Any]] = []

    def keep(body: dict[str, Any]) -> dict[str, Any]:
        bodies.append(body)
        return {"run_id": body["run_id"]}

    wf._submit = keep
    wf.run()
    return bodies[0]


def _post_at_once(url: str, body: dict[str, Any], times: int) -> list[httpx.Response]:
    data = msgspec.msgpack.encode(body)
    answers: list[httpx.Response] = []

    def post() -> None:
        answers.append(
            httpx.post(
                f"{url}/runs", content=data, headers={"content-type": "application/msgpack"}, timeout=30
            )
        )

    threads = [threading.Thread(target=post) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _idle(url: str) -> bool:
    """Every node reserves and runs nothing (the controller's reservations, the heartbeat's use)."""
    nodes = httpx.get(f"{url}/cluster/resources", timeout=5).json()["nodes"]
    return all(n["cpu"]["committed"] == 0 and n["cpu"]["in_use"] == 0 and n["running"] == 0 for n in nodes)


@pytest.mark.parametrize("first_seconds", [0.0, 0.6])
def test_the_same_request_twice_at_once_is_recorded_in_turn(
    client: MaClient, head: HeadProcess, first_seconds: float
) -> None:
    """The copy placed (and started) at submit is the one stored: the other, sent at the same
    moment, waits its turn and finds it (a duplicate), even when the first lingers its whole 300 ms
    (a first task that runs longer). One run, placed in its first message, one attempt per task."""
    for _ in range(3):
        wf = client.create_workflow()
        a = wf.add_task(sleeps, inputs={"x": 0, "seconds": first_seconds})
        wf.add_task(step, inputs={"x": a.outputs["x"]})
        body = _body_of(wf)
        answers = _post_at_once(head.url, body, 2)
        assert [r.status_code // 100 for r in answers] == [2, 2], [r.text for r in answers]
        assert {r.json()["run_id"] for r in answers} == {body["run_id"]}
        assert sorted(bool(r.json()["duplicate"]) for r in answers) == [False, True]
        assert wf.show_results(body["run_id"])["state"] == "succeeded"
        events = client.get_run_events(body["run_id"])
        first = events[0]["seq"]
        placed = [
            (e["task_id"], e["attempt"], e["seq"] == first) for e in events if e["type"] == "attempt.placed"
        ]
        assert sorted(placed) == sorted((t, 1, True) for t in wf.tasks), events
        succeeded = [e["task_id"] for e in events if e["type"] == "attempt.succeeded"]
        assert sorted(succeeded) == sorted(wf.tasks), events
        assert [e["type"] for e in events].count("run.finished") == 1
    # nothing is left reserved or running on the node
    wait_until(lambda: _idle(head.url), timeout=15, interval=0.2)
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=60).json()
    assert report["equal"] is True, report


@task
def counted(x: int = 0, marker: str = "", seconds: float = 0.0) -> dict:
    """Appends a line to `marker` each time it starts, then sleeps `seconds`."""
    import time

    with open(marker, "a") as out:
        out.write("ran\n")
    time.sleep(seconds)
    return {"x": x + 1}


def test_a_copy_stored_first_by_another_head_stops_the_early_attempts_which_run_again_at_once(
    client: MaClient,
    head: HeadProcess,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    """The same request reaches another head (no placements there: it does not decide) while this
    head's message waits for the attempt it started (a 0.5 s task: the whole 300 ms), and is stored
    first: this head's message is a duplicate, its early attempt stops (what it did is recorded
    nowhere), and the controller places it again at once, on the same attempt number; it starts
    again as soon as the stopped one has ended, not after the 60 s resend."""
    other = HeadProcess(
        tmp_path_factory.mktemp("other"), nats_url=nats_server.url, extra=["--no-local-worker"]
    )
    other.start()
    try:
        marker = tmp_path / "ran.txt"
        wf = client.create_workflow()
        a = wf.add_task(counted, inputs={"x": 0, "marker": str(marker), "seconds": 0.5})
        b = wf.add_task(step, inputs={"x": a.outputs["x"]})
        body = _body_of(wf)
        data = msgspec.msgpack.encode(body)
        headers = {"content-type": "application/msgpack"}
        answers: dict[str, httpx.Response] = {}

        def post(name: str, url: str) -> None:
            answers[name] = httpx.post(f"{url}/runs", content=data, headers=headers, timeout=30)

        here = threading.Thread(target=post, args=("here", head.url))
        here.start()
        wait_until(marker.exists, timeout=10, interval=0.01)  # started early; its message waits
        post("other", other.url)
        here.join()
        assert (answers["other"].status_code, answers["other"].json()["duplicate"]) == (201, False)
        assert (answers["here"].status_code, answers["here"].json()["duplicate"]) == (201, True)
        run_id = body["run_id"]
        wait_until(lambda: client.get_run(run_id)["state"] == "succeeded", timeout=20, interval=0.1)
        assert marker.read_text().count("ran") == 2  # the stopped early attempt, then the recorded one
        events = client.get_run_events(run_id)
        assert _kinds(events)[0] == ("run.created", "") and events[1]["seq"] > events[0]["seq"]
        placed = [(e["task_id"], e["attempt"]) for e in events if e["type"] == "attempt.placed"]
        assert sorted(placed) == sorted([(a.task_id, 1), (b.task_id, 1)]), events
        started = [e["task_id"] for e in events if e["type"] == "attempt.started"]
        succeeded = [e["task_id"] for e in events if e["type"] == "attempt.succeeded"]
        assert sorted(started) == sorted(succeeded) == sorted([a.task_id, b.task_id]), events
        assert wf.show_results(run_id)["task_results"][b.task_id] == {"x": 2}
    finally:
        other.stop()
    wait_until(lambda: _idle(head.url), timeout=15, interval=0.2)


@task(max_retries=1, retry_backoff_seconds=0)
def fails_now(x: int = 0) -> dict:
    raise RuntimeError("no")


def test_a_failure_joins_the_message_and_the_controller_retries_it(client: MaClient) -> None:
    wf = client.create_workflow()
    t = wf.add_task(fails_now, inputs={"x": 0})
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "failed"
    events = client.get_run_events(run_id)
    first = events[0]["seq"]
    assert [(e["type"], e.get("attempt")) for e in events if e["seq"] == first] == [
        ("run.created", None),
        ("attempt.placed", 1),
        ("attempt.started", 1),
        ("attempt.failed", 1),
    ]
    later = [(e["type"], e.get("attempt")) for e in events if e["seq"] > first]
    assert later[0][0] == "retry.scheduled"
    assert ("attempt.failed", 2) in later and later[-1] == ("run.finished", None)
    assert [a["state"] for a in client.get_run_task(run_id, t.task_id)["attempts"]] == ["failed", "failed"]
