"""The head's child process for the read models (projector and queries) is supervised: killed, it
is started again while the head goes on, and nothing accepted is lost."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, wait_until


@task
def plus_one(x: int = 0):
    return {"x": x + 1}


def _child(head: HeadProcess, module: str) -> psutil.Process:
    assert head.proc is not None
    for child in psutil.Process(head.proc.pid).children():
        if module in " ".join(child.cmdline()):
            return child
    raise AssertionError(f"no {module} child of the head")


def _chain(client: MaClient) -> dict[str, object]:
    wf = client.create_workflow()
    first = wf.add_task(plus_one, inputs={"x": 1})
    wf.add_task(plus_one, inputs={"x": first.outputs["x"]})
    return wf.show_results(wf.run())


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    proc = HeadProcess(tmp_path_factory.mktemp("children") / "head", extra=["--heartbeat-interval", "0.5"])
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log()


def test_a_killed_read_models_process_is_started_again_and_reads_recover(head: HeadProcess) -> None:
    client = MaClient(head.url)
    before = _chain(client)
    assert before["state"] == "succeeded"
    victim = _child(head, "maze.projections.service")
    os.kill(victim.pid, signal.SIGKILL)
    # runs go on meanwhile (the controller and the workers do not need the read models)
    during = _chain(client)
    assert during["state"] == "succeeded"

    def reads_again() -> bool:
        try:
            return len(client.list_runs(limit=10)) >= 2
        except Exception:
            return False

    wait_until(reads_again, timeout=60)
    assert _child(head, "maze.projections.service").pid != victim.pid
    assert "readmodels.exited_restarting" in head.log()
    health = httpx.get(f"{head.url}/health").json()
    assert health["status"] == "ok", health
