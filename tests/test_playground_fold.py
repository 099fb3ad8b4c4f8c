"""The Playground folds a run's events in the browser (ui/src/fold/runFold.ts: the run page's live
DAG and its time travel). Its states must be the server's: here the TypeScript fold, bundled with
the ui's own esbuild and run by node, reads the events of real runs (a success, a failure after a
retry, a cancel) and must say what the read models say about every task and attempt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, wait_until

UI = Path(__file__).resolve().parent.parent / "ui"
ESBUILD = UI / "node_modules" / ".bin" / "esbuild"


def _need_node() -> None:
    missing = [
        what for what, ok in (("node", shutil.which("node")), ("ui/node_modules", ESBUILD.exists())) if not ok
    ]
    if missing:
        reason = f"{' and '.join(missing)} missing (run `npm ci` in ui/)"
        if os.environ.get("MAZE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@task
def produce(n: int = 0):
    return {"n": n + 1}


@task(max_retries=1, retry_backoff_seconds=0.2)
def flaky(flag: str = "", n: int = 0):
    import os

    if not os.path.exists(flag):
        open(flag, "w").close()
        raise RuntimeError("first attempt fails")
    return {"n": n * 2}


@task
def broken(n: int = 0):
    raise ZeroDivisionError(f"cannot divide {n}")


@task
def slow(n: int = 0):
    import time

    time.sleep(60)
    return {"n": n}


@pytest.fixture(scope="module")
def fold_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_node()
    out = tmp_path_factory.mktemp("fold") / "fold.cjs"
    subprocess.run(
        [str(ESBUILD), str(UI / "src/fold/foldCli.ts"), "--bundle", "--platform=node", f"--outfile={out}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def _events(url: str, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = httpx.get(f"{url}/runs/{run_id}/events", params={"after": after}, timeout=30).json()
        events += page["events"]
        after = page["last_seq"]
        if not page["more"]:
            return events


def _compare(url: str, run_id: str, fold_js: Path) -> dict[str, Any]:
    events = _events(url, run_id)
    proc = subprocess.run(
        ["node", str(fold_js)],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    folded = json.loads(proc.stdout)
    seq = max(e["seq"] for e in events)
    run = httpx.get(f"{url}/runs/{run_id}", params={"min_seq": seq}, timeout=30).json()
    assert folded["state"] == run["state"] and folded["kind"] == run["kind"]
    tasks = httpx.get(f"{url}/runs/{run_id}/tasks", timeout=30).json()
    shown = {
        t["task_id"]: {k: t[k] for k in ("state", "attempt", "failures", "node_id", "task_index", "upstream")}
        for t in tasks
    }
    mine = {
        t["task_id"]: {k: t[k] for k in ("state", "attempt", "failures", "node_id", "task_index", "upstream")}
        for t in folded["tasks"]
    }
    assert mine == shown
    for t in tasks:
        detail = httpx.get(f"{url}/runs/{run_id}/tasks/{t['task_id']}", timeout=30).json()
        theirs = sorted((a["attempt"], a["state"], a["node_id"]) for a in detail["attempts"])
        ours = sorted(
            (a["attempt"], a["state"], a["node_id"])
            for a in folded["attempts"]
            if a["task_id"] == t["task_id"]
        )
        assert ours == theirs, t["task_id"]
    return folded


def _finished(client: MaClient, run_id: str) -> bool:
    return client.get_run(run_id)["state"] not in ("created", "running")


def test_the_browser_fold_agrees_with_the_read_models(
    head: HeadProcess, tmp_path: Path, fold_js: Path
) -> None:
    client = MaClient(head.url)
    # a success after a retry, downstream of it a failure, and a task never run (cancelled)
    wf = client.create_workflow()
    first = wf.add_task(produce, inputs={"n": 1})
    retried = wf.add_task(flaky, inputs={"flag": str(tmp_path / "flag"), "n": first.outputs["n"]})
    failing = wf.add_task(broken, inputs={"n": retried.outputs["n"]})
    wf.add_task(produce, inputs={"n": failing.outputs["n"]})
    failed_run = wf.run()
    wait_until(lambda: _finished(client, failed_run), timeout=60)
    folded = _compare(head.url, failed_run, fold_js)
    assert folded["state"] == "failed"
    assert sorted(t["state"] for t in folded["tasks"]) == ["cancelled", "failed", "succeeded", "succeeded"]
    assert any(t["failures"] == 1 and t["state"] == "succeeded" for t in folded["tasks"])  # the retry

    # a cancel while a task runs
    wf = client.create_workflow()
    wf.add_task(slow, inputs={"n": 1})
    cancelled = wf.run()
    wait_until(lambda: client.get_run(cancelled)["progress"].get("running", 0) == 1, timeout=30)
    httpx.post(f"{head.url}/runs/{cancelled}/cancel", json={}, timeout=30).raise_for_status()
    wait_until(lambda: _finished(client, cancelled), timeout=60)
    assert _compare(head.url, cancelled, fold_js)["state"] == "cancelled"
