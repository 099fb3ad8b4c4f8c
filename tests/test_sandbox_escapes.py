"""Escapes a reviewer reproduced against sandboxed attempts (real head, its local worker, real
bubblewrap), each now refused: files swapped for links after the task returned, a task that
wedges the worker's loop through its reply socket, network=True reaching the head's open
loopback API, a head whose data dir is a symlink. And what an attempt leaves behind is removed."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from maze import MaClient, task
from maze.core.errors import ValidationError
from maze.workers.cgroups import probe_cgroups
from maze.workers.sandbox_net import find_slirp
from tests.helpers import HeadProcess, WorkerProcess, wait_until
from tests.test_sandbox import WHY_NOT

pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no sandbox on this machine: {WHY_NOT}")
SECRET = "TOP-SECRET-outside-the-sandbox"


@pytest.fixture(scope="module")
def escape_head() -> Iterator[HeadProcess]:
    """A head with its local worker, its data dir in $HOME (which sandboxes see), a secret beside
    its credentials there."""
    data = Path(tempfile.mkdtemp(prefix="maze-escape-test-", dir=Path.home()))
    head = HeadProcess(data, extra=["--cpus", "2"])
    try:
        head.start()
        (data / "SECRET.txt").write_text(SECRET + "\n")
        yield head
        assert head.stop() == 0, head.log()
    finally:
        if head.proc is not None and head.proc.poll() is None:
            head.kill9()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def client(escape_head: HeadProcess) -> MaClient:
    return MaClient(escape_head.url)


def _task_row(client: MaClient, run_id: str, task_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{client.server_url}/runs/{run_id}/tasks/{task_id}", timeout=10).json())


# ---- a data dir reached through a link --------------------------------------------------------
@task(sandbox=True)
def peek(paths: list | None = None) -> dict:
    seen = {}
    for path in paths or []:
        try:
            seen[path] = sorted(os.listdir(path))
        except OSError as exc:
            seen[path] = type(exc).__name__
    return {"seen": seen}


def test_a_data_dir_that_is_a_symlink_is_hidden_by_both_names() -> None:
    base = Path(tempfile.mkdtemp(prefix="maze-escape-link-", dir=Path.home()))
    real = base / "real"
    real.mkdir()
    (base / "data").symlink_to(real)
    head = HeadProcess(base / "data", extra=["--cpus", "1"])
    try:
        head.start()
        link = str(head.data_dir)
        assert "nats-users.json" in os.listdir(real)
        wf = MaClient(head.url).create_workflow()
        t = wf.add_task(peek, inputs={"paths": [link, str(real)]})
        summary = wf.show_results(wf.run())
        assert summary["state"] == "succeeded", summary
        assert summary["task_results"][t.task_id]["seen"] == {link: [], str(real): []}
    finally:
        head.stop()
        shutil.rmtree(base, ignore_errors=True)


# ---- a file swapped for a link after the task returned ------------------------------------------
@task(sandbox=True)
def swapper(target_dir: str = "", n: int = 3000, delay: float = 0.3) -> dict:
    import threading
    import time

    Path("a").mkdir()
    for i in range(n):  # many files: the worker's collection takes a while
        Path(f"a/{i:05d}").write_text(f"filler {i}\n")
    Path("d").mkdir()
    Path("d", "SECRET.txt").write_text("harmless\n")
    Path("real.txt").write_text("harmless\n")

    def swap() -> None:
        time.sleep(delay)
        os.rename("d", "d_old")
        os.symlink(target_dir, "d")
        os.replace("real.txt", "real_old.txt")
        os.symlink(os.path.join(target_dir, "SECRET.txt"), "real.txt")

    threading.Thread(target=swap).start()  # not a daemon: the process outlives its reply
    return {"ok": 1}


def test_files_swapped_for_links_after_returning_are_never_read(
    client: MaClient, escape_head: HeadProcess
) -> None:
    real = str(escape_head.data_dir)
    for delay in (0.3, 1.0):
        wf = client.create_workflow()
        wf.add_task(swapper, inputs={"target_dir": real, "delay": delay})
        run_id = wf.run(artifact_mode=True)
        run = client.wait_run(run_id, timeout=300)
        assert run["state"] == "succeeded", run
        artifacts = client.get_run_artifacts(run_id)
        assert len(artifacts) >= 3000
        for art in artifacts:
            if art["path"].startswith(("d/", "d_old/", "real")):
                body = httpx.get(f"{escape_head.url}/artifacts/sha256/{art['sha256']}", timeout=10).content
                assert SECRET.encode() not in body, (delay, art)
                assert body == b"harmless\n", (delay, art)
        # the sandbox was ended before its files were read: the swap never happened
        paths = {a["path"] for a in artifacts}
        assert "d/SECRET.txt" in paths and "real.txt" in paths and "d_old/SECRET.txt" not in paths


# ---- the reply socket -------------------------------------------------------------------------
@task(sandbox=True, timeout_seconds=4)
def wedge(hold: float = 15.0, length: int = 1000) -> dict:
    import struct
    import sys
    import time

    fd = int(sys.argv[-1])  # the connection to the worker
    os.write(fd, struct.pack("!i", length))  # a reply announced, never sent
    time.sleep(hold)
    return {"ok": 1}


def test_a_task_cannot_wedge_the_worker_through_its_reply_socket(
    client: MaClient, escape_head: HeadProcess
) -> None:
    wf = client.create_workflow()
    t = wf.add_task(wedge, inputs={"hold": 15.0})
    run_id = wf.run()
    wait_until(lambda: _task_row(client, run_id, t.task_id)["state"] == "running", timeout=30)
    time.sleep(1.0)  # its header is written: the worker (in the head's process) still answers
    for _ in range(3):
        assert httpx.get(f"{escape_head.url}/healthz", timeout=2).status_code == 200
        time.sleep(0.5)
    client.wait_run(run_id, timeout=60)
    row = _task_row(client, run_id, t.task_id)
    assert row["state"] in ("failed", "timed_out"), row
    assert row["error"]["error_type"] == "timed_out", row["error"]
    # a reply announced larger than any reply may be is refused before it is read
    wf = client.create_workflow()
    t = wf.add_task(wedge, inputs={"hold": 0.0, "length": 2**31 - 1})
    run_id = wf.run()
    client.wait_run(run_id, timeout=60)
    error = _task_row(client, run_id, t.task_id)["error"]
    assert error["error_type"] == "payload_too_large" and "reply is 2147483647 bytes" in error["message"], (
        error
    )


# ---- network=True -----------------------------------------------------------------------------
@task(sandbox=True, network=True)
def reach(url: str = "", targets: list | None = None) -> dict:
    import socket

    out = {}
    for host, port in targets or []:
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect((host, port))
            out[f"{host}:{port}"] = "connected"
        except OSError as exc:
            out[f"{host}:{port}"] = type(exc).__name__
        finally:
            sock.close()
    try:
        import httpx

        out["api"] = f"reached: {httpx.get(url + '/healthz', timeout=5).status_code}"
    except Exception as exc:
        out["api"] = type(exc).__name__
    return out


def _outside_address() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return str(addr.address)
    return None


@pytest.mark.skipif(find_slirp() is None, reason="slirp4netns is not installed: no sandbox has network")
def test_network_reaches_out_but_not_the_hosts_loopback(client: MaClient, escape_head: HeadProcess) -> None:
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback to reach")
    listener = socket.create_server(("0.0.0.0", 0))
    port = listener.getsockname()[1]
    accepted = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
    accepted.start()
    try:
        wf = client.create_workflow()
        targets = [[outside, port], ["127.0.0.1", escape_head.port], ["10.0.2.2", escape_head.port]]
        t = wf.add_task(reach, inputs={"url": escape_head.url, "targets": targets})
        summary = wf.show_results(wf.run())
        assert summary["state"] == "succeeded", summary
        seen = summary["task_results"][t.task_id]
    finally:
        listener.close()
    assert seen[f"{outside}:{port}"] == "connected", seen  # the network is there
    # the head's API (open on loopback) is not: its own loopback, and slirp's host alias refused
    assert seen[f"127.0.0.1:{escape_head.port}"] == "ConnectionRefusedError", seen
    assert seen[f"10.0.2.2:{escape_head.port}"] != "connected", seen
    assert not seen["api"].startswith("reached"), seen
    nodes = httpx.get(f"{escape_head.url}/cluster/resources", timeout=10).json()["nodes"]
    assert nodes[0]["sandbox"]["network"] is True


# ---- GPUs -------------------------------------------------------------------------------------
def test_a_sandboxed_task_cannot_ask_for_a_gpu(client: MaClient) -> None:
    with pytest.raises(ValidationError, match="sandboxed task cannot have a GPU"):
        task(sandbox=True, resources={"gpu": 1})(lambda: {})
    body = {
        "tasks": [
            {
                "task_id": "t1",
                "func_name": "f",
                "func_hash": "0" * 64,
                "resources": {"sandbox": True, "gpu_mem": 1000},
            }
        ]
    }
    answer = httpx.post(f"{client.server_url}/runs", json=body, timeout=10)
    assert answer.status_code in (400, 422), answer.text
    assert "sandboxed task cannot have a GPU" in answer.text


# ---- leaks ------------------------------------------------------------------------------------
CGROUPS = probe_cgroups(f"test-esc-{os.getpid()}")
if CGROUPS is not None:
    CGROUPS.close()


@task(sandbox=True, resources={"cpu_mem": 1})
def tiny(n: int = 0) -> dict:
    return {"n": n}


@pytest.mark.skipif(
    CGROUPS is None or CGROUPS.kind != "cgroup1", reason="only cgroup v1 refuses a limit below its use"
)
def test_a_sandbox_that_cannot_be_limited_leaves_no_directory(
    client: MaClient, escape_head: HeadProcess
) -> None:
    wf = client.create_workflow()
    t = wf.add_task(tiny, inputs={"n": 1})
    run_id = wf.run()
    client.wait_run(run_id, timeout=60)
    error = _task_row(client, run_id, t.task_id)["error"]
    assert error["error_type"] == "sandbox_error", error
    work = escape_head.data_dir / "work"
    wait_until(lambda: not (work / run_id).exists(), timeout=10)


def test_a_worker_starting_sweeps_what_a_killed_one_left(tmp_path: Path) -> None:
    head = HeadProcess(tmp_path / "head", extra=["--no-local-worker"])
    work = tmp_path / "work"
    head.start()
    worker = WorkerProcess(head, "sweeper", ["--cpus", "1", "--work-dir", str(work)], tmp_path)
    try:
        worker.start()
        worker.kill9()
        # what a killed worker leaves: attempt dirs, spares, a half-fetched file, a cgroup
        (work / "run_x" / "task_y" / "1").mkdir(parents=True)
        (work / "run_x" / "task_y" / "1" / "made.txt").write_text("x")
        (work / ".sandbox-spares" / "abc").mkdir(parents=True)
        (work / ".content").mkdir(exist_ok=True)
        (work / ".content" / ("a" * 64)).write_text("kept")
        (work / ".content" / f".{'b' * 64}.123.ff.part").write_text("half")
        stale = None
        groups = probe_cgroups("sweeper")
        if groups is not None:
            stale = groups.make()
        worker = WorkerProcess(head, "sweeper", ["--cpus", "1", "--work-dir", str(work)], tmp_path)
        worker.start()
        # (the node is known from the killed session: its start is seen in the work root)
        wait_until(
            lambda: not (work / "run_x").exists() and not (work / ".sandbox-probe").exists(), timeout=30
        )
        assert sorted(p.name for p in work.iterdir() if p.name != ".sandbox-spares") == [
            ".content",
            ".maze-work-root",
        ]
        assert not list((work / ".sandbox-spares").glob("abc"))
        assert [p.name for p in (work / ".content").iterdir()] == ["a" * 64]
        if stale is not None:  # removed as its sandbox support is probed
            wait_until(lambda: not any(d.exists() for d in stale.dirs.values()), timeout=30)
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.stop()
        head.stop()
