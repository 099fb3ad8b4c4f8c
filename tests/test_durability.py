"""kill -9 of the head in the middle of a run: after a restart the run completes, and every task
succeeded exactly once in history."""

from __future__ import annotations

import collections
import time

import pytest

from maze import MaClient, task
from maze.core.errors import Unavailable
from tests.helpers import HeadProcess, wait_port_free, wait_until


@task
def slow(i: int = 0):
    import time as _t

    _t.sleep(1.5)
    return {"i": i}


@task
def gather(**parts):
    return {"n": len(parts)}


def test_kill_head_mid_run_then_restart(tmp_path) -> None:
    head = HeadProcess(tmp_path / "head", extra=["--cpus", "2"])  # embedded NATS, fixed ports
    head.start()
    try:
        client = MaClient(head.url)
        wf = client.create_workflow()
        leaves = [wf.add_task(slow, inputs={"i": i}) for i in range(4)]
        join = wf.add_task(gather, inputs={f"p{i}": t.outputs["i"] for i, t in enumerate(leaves)})
        run_id = wf.run()
        # wait until some attempts are running, then kill the head (its NATS and task processes die too)
        wait_until(lambda: any(t["state"] == "running" for t in client.get_run_tasks(run_id)))
        head.kill9()
        wait_port_free(head.port)
        wait_port_free(head.nats_port)
        head.start()
        client = MaClient(head.url)
        wait_until(lambda: client.get_run(run_id)["state"] in ("succeeded", "failed"), timeout=60)
        run = client.get_run(run_id)
        assert run["state"] == "succeeded", run
        summary = client.create_workflow().show_results(run_id)
        assert summary["task_results"][join.task_id] == {"n": 4}

        events = client.get_run_events(run_id)
        succeeded = collections.Counter(e["task_id"] for e in events if e["type"] == "attempt.succeeded")
        assert set(succeeded) == {t.task_id for t in [*leaves, join]}
        assert all(count == 1 for count in succeeded.values()), succeeded
        lost = [e for e in events if e["type"] == "attempt.lost"]
        assert lost, "the kill should have interrupted running attempts"
        assert not [e for e in events if e["type"] == "attempt.failed"]
        for e in lost:  # an attempt that had started is a node_lost failure; one that had not, none
            attempt = client.get_run_task(run_id, e["task_id"])["attempts"][e["attempt"] - 1]
            started = any(  # before the loss, in the log: what decides what the loss means
                s["type"] == "attempt.started"
                and (s["task_id"], s["attempt"]) == (e["task_id"], e["attempt"])
                and s["seq"] < e["seq"]
                for s in events
            )
            assert attempt["state"] == ("failed" if started else "lost"), attempt
            if started:
                assert attempt["error"]["error_type"] == "node_lost"
        for e in lost:  # each interrupted attempt was retried by a later attempt that succeeded
            assert any(
                s["type"] == "attempt.succeeded"
                and s["task_id"] == e["task_id"]
                and s["attempt"] > e["attempt"]
                for s in events
            )
        assert sum(1 for e in events if e["type"] == "run.finished") == 1
    finally:
        head.stop()


def test_ctrl_c_stops_everything(tmp_path) -> None:
    import psutil

    head = HeadProcess(tmp_path / "head")
    head.start()
    proc = psutil.Process(head.proc.pid)
    children = proc.children(recursive=True)
    assert any("nats-server" in c.name() for c in children)
    assert head.stop() == 0
    time.sleep(0.2)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


async def test_embedded_nats_requires_the_credentials_the_head_hands_out(tmp_path) -> None:
    import httpx
    import msgspec
    import nats
    from nats.errors import NoServersError

    head = HeadProcess(tmp_path / "head")
    head.start()
    try:
        (url,) = httpx.get(f"{head.url}/cluster/nats", params={"node_id": "n1"}).json()["nats_urls"]
        assert url.endswith(f"@127.0.0.1:{head.nats_port}")
        users = msgspec.json.decode((tmp_path / "head" / "nats-users.json").read_bytes())
        assert url == f"nats://worker-n1:{users['workers']['n1']}@127.0.0.1:{head.nats_port}"
        for secret in (users["head"], users["workers"]["n1"]):
            assert secret not in head.log()  # never logged
        nc = await nats.connect(url)
        await nc.flush()
        await nc.close()
        try:
            await nats.connect(
                f"nats://127.0.0.1:{head.nats_port}",
                max_reconnect_attempts=0,
                connect_timeout=2,
                allow_reconnect=False,
            )
            raise AssertionError("a client without credentials must be refused")
        except (NoServersError, nats.errors.Error):
            pass
    finally:
        head.stop()


@task
def once(i: int = 0):
    return {"i": i}


@task(resources={"cpu": 2})
def once_wide(i: int = 0):  # more CPU than `once`: never its follower (maze/head/followers.py)
    return {"i": i}


@pytest.mark.parametrize("fault", ["kill-after-placed", "kill-after-placed-in-pass"])
def test_head_killed_between_placement_and_work_the_agent_still_runs_everything_once(tmp_path, fault) -> None:
    """The fault the log must absorb: the head records attempt.placed and dies before it publishes
    the work (a test-only switch kills it right there): in the submit, whose message carries the
    first placements (`kill-after-placed`), or in a pass of the controller, which places the rest
    (`kill-after-placed-in-pass`: the chain's second task). An agent worker's session survives the
    head's restart, so nothing marks its attempts lost: only the controller's delivery check, which
    sends again the work of every attempt placed and not started when it starts, gets the run
    going. It completes, every task succeeds exactly once, and nothing counts as a failure."""
    from tests.helpers import WorkerProcess

    beat = ["--heartbeat-interval", "0.5"]
    head = HeadProcess(tmp_path / "head", extra=["--no-local-worker", "--liveness-timeout", "30", *beat])
    head.start()
    agent = WorkerProcess(head, "agent", ["--cpus", "2", "--gpus", "none", "--agent", *beat], tmp_path)
    agent.start()
    session = agent.alive_session()
    try:
        head.stop()  # the next start of the head has the switch on
        head.env = {"MAZE_FAULT_INJECTION": fault}
        head.start()
        assert wait_until(agent.alive_session, timeout=30) == session
        wf = MaClient(head.url).create_workflow()
        if fault == "kill-after-placed":
            tasks = [wf.add_task(once, inputs={"i": i}) for i in range(3)]
            # and a follower of the first, placed with it: its work, never sent either, is sent
            # once the first's success puts it in force
            tasks.append(wf.add_task(once, inputs={"i": tasks[0].outputs["i"]}))
            # the placements travel with run.created: the head dies inside the submit, after both
            # are stored and before any work is sent, so the client never hears back
            with pytest.raises(Unavailable):
                wf.run()
        else:
            first = wf.add_task(once, inputs={"i": 1})
            tasks = [first, wf.add_task(once_wide, inputs={"i": first.outputs["i"]})]
            wf.run()  # placed at submit and run; the controller then places the second and dies
        assert head.proc is not None
        head.proc.wait(timeout=30)
        assert "fault_injection_kill" in head.log()
        wait_port_free(head.port)
        wait_port_free(head.nats_port)
        head.env = {}
        head.start()
        client = MaClient(head.url)
        [run] = client.list_runs(limit=5)
        run_id = run["run_id"]
        wait_until(lambda: client.get_run(run_id)["state"] in ("succeeded", "failed"), timeout=60)
        assert client.get_run(run_id)["state"] == "succeeded"
        events = client.get_run_events(run_id)
        succeeded = collections.Counter(e["task_id"] for e in events if e["type"] == "attempt.succeeded")
        assert succeeded == {t.task_id: 1 for t in tasks}
        kinds = collections.Counter(e["type"] for e in events)
        assert kinds["attempt.placed"] == len(tasks), "placed once each; never again"
        assert not {"attempt.lost", "attempt.failed", "retry.scheduled"} & set(kinds), kinds
        assert agent.alive_session() == session, "the same worker session ran them"
        assert "work.resent" in head.log()
    finally:
        agent.stop()
        head.stop()
