"""API authentication: a head others can reach requires its token on every call, REST and SSE; a
loopback-only head stays open; `--insecure` is the explicit, warned way out."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maze import MaClient, task
from maze.core.errors import Unauthorized
from tests.helpers import HeadProcess, WorkerProcess, wait_until


@task
def double(x: int = 0):
    return {"x": 2 * x}


@pytest.fixture(scope="module")
def public_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    head = HeadProcess(tmp_path_factory.mktemp("public") / "head", extra=["--host", "0.0.0.0"])
    head.start()
    yield head
    head.stop()


def _token(head: HeadProcess) -> str:
    return (head.data_dir / "api-token").read_text().strip()


def test_a_public_head_makes_a_private_token_and_says_it_once(public_head: HeadProcess) -> None:
    path = public_head.data_dir / "api-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = _token(public_head)
    assert len(token) >= 32
    # printed as the head says it is ready, which may come just after it answers
    wait_until(lambda: f"MAZE_TOKEN={token} maze start --worker" in public_head.log(), timeout=10)
    log = public_head.log()
    assert log.count(token) == 2, "printed once: the token line and the join command"
    assert f"MAZE_TOKEN={token} maze start --worker" in log  # in the environment, not argv


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/runs"),
        ("GET", "/runs/run_x/stream"),
        ("POST", "/runs"),
        ("GET", "/cluster/nats"),
        ("GET", "/schema"),
    ],
)
def test_every_call_without_the_token_is_401(public_head: HeadProcess, method: str, path: str) -> None:
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {_token(public_head)}"}):
        resp = httpx.request(method, f"{public_head.url}{path}", headers=auth, timeout=10)
        assert resp.status_code == 401, (path, auth, resp.text)
        assert resp.json()["error"]["type"] == "unauthorized"
        assert resp.headers["www-authenticate"].startswith("Bearer")


def test_with_the_token_rest_and_sse_work(public_head: HeadProcess) -> None:
    client = MaClient(public_head.url, token=_token(public_head))
    wf = client.create_workflow()
    t = wf.add_task(double, inputs={"x": 21})
    run_id = wf.run()
    assert wf.show_results(run_id)["task_results"][t.task_id] == {"x": 42}
    assert client.get_run(run_id)["state"] == "succeeded"
    events = list(client.follow_run_events(run_id))  # SSE
    assert events[-1]["type"] == "run.finished"
    bare = MaClient(public_head.url, token="wrong")
    with pytest.raises(Unauthorized):
        bare.list_runs()


def test_the_sdk_and_cli_find_a_local_heads_token_in_its_data_dir(
    public_head: HeadProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAZE_TOKEN", raising=False)
    monkeypatch.setenv("MAZE_DATA_DIR", str(public_head.data_dir))
    assert isinstance(MaClient(public_head.url).list_runs(), list)
    env = {**os.environ, "MAZE_DATA_DIR": str(public_head.data_dir)}
    env.pop("MAZE_TOKEN", None)
    out = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "list", "--server-url", public_head.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    env["MAZE_DATA_DIR"] = str(public_head.data_dir.parent / "elsewhere")
    out = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "list", "--server-url", public_head.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1 and "requires its API token" in out.stdout


def test_a_worker_joins_with_the_token_and_not_without(public_head: HeadProcess, tmp_path: Path) -> None:
    env_before = dict(os.environ)
    try:
        os.environ.pop("MAZE_TOKEN", None)
        os.environ["MAZE_DATA_DIR"] = str(tmp_path / "no-token-here")
        refused = subprocess.run(
            [sys.executable, "-m", "maze", "start", "--worker", "--addr", f"127.0.0.1:{public_head.port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "HTTP 401" in refused.stdout, refused.stdout
        worker = WorkerProcess(
            public_head, "with-token", ["--cpus", "1", "--token", _token(public_head)], tmp_path
        )
        worker.env = {"MAZE_TOKEN": _token(public_head)}  # for the test's own readiness checks
        worker.start(wait=False)
        try:
            token = {"Authorization": f"Bearer {_token(public_head)}"}

            def joined() -> bool:
                nodes = httpx.get(f"{public_head.url}/cluster/resources", headers=token, timeout=5).json()[
                    "nodes"
                ]
                return any(n["node_id"] == "with-token" and n["state"] == "alive" for n in nodes)

            from tests.helpers import wait_until

            wait_until(joined, timeout=30)
        finally:
            worker.stop()
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def test_insecure_keeps_a_public_head_open_and_says_so(tmp_path: Path) -> None:
    head = HeadProcess(tmp_path / "head", extra=["--host", "0.0.0.0", "--insecure", "--no-local-worker"])
    head.start()
    try:
        assert httpx.get(f"{head.url}/runs", timeout=10).status_code == 200
        assert "WARNING: --insecure" in head.log()
        assert not (head.data_dir / "api-token").exists()
    finally:
        head.stop()


def test_a_loopback_head_given_a_token_requires_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback-only head is open (every other test's head is one) unless a token is given."""
    monkeypatch.setenv("MAZE_TOKEN", "s3cret-token-for-test")  # the head's, and the readiness check's
    head = HeadProcess(tmp_path / "head", extra=["--no-local-worker"])
    head.start()
    try:
        assert httpx.get(f"{head.url}/runs", timeout=10).status_code == 401
        ok = httpx.get(
            f"{head.url}/runs", headers={"Authorization": "Bearer s3cret-token-for-test"}, timeout=10
        )
        assert ok.status_code == 200
        assert not (head.data_dir / "api-token").exists(), "a given token is not written down"
    finally:
        head.stop()
