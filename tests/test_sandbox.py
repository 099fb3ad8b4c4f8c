"""Sandboxed attempts on a real head (its local worker) with real bubblewrap: what a task inside
sees, and the escapes it tries (README, "Sandboxed execution"). Each is refused or contained, and
the concrete failure is asserted."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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
from tests.helpers import HeadProcess, WorkerProcess, wait_until


def _bwrap_runs() -> str | None:
    """None if bubblewrap runs here as the worker will run it, else why not."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-user"]
    argv += ["--unshare-pid", "--unshare-net", "--die-with-parent", "--new-session", "true"]
    done = subprocess.run(argv, capture_output=True, timeout=30)
    if done.returncode != 0:
        return f"bubblewrap cannot make namespaces here: {done.stderr.decode(errors='replace').strip()}"
    return None


WHY_NOT = _bwrap_runs()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no sandbox on this machine: {WHY_NOT}")
SECRET_ENV = "AWS_SECRET_ACCESS_KEY"


@pytest.fixture(scope="module")
def sandbox_head() -> Iterator[HeadProcess]:
    """A head with its embedded NATS (its credentials in its data dir) and its local worker, the
    data dir in $HOME, which sandboxes see (their /tmp and /var/tmp are their own: hiding the
    data dir there would come for free)."""
    data_dir = Path(tempfile.mkdtemp(prefix="maze-sandbox-test-", dir=Path.home()))
    os.environ[SECRET_ENV] = "not-for-tasks"
    head = HeadProcess(data_dir, extra=["--cpus", "2"])
    try:
        head.start()
        yield head
        assert head.stop() == 0, head.log()
    finally:
        os.environ.pop(SECRET_ENV, None)
        if head.proc is not None and head.proc.poll() is None:
            head.kill9()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def sb_client(sandbox_head: HeadProcess) -> MaClient:
    return MaClient(sandbox_head.url)


def _run_one(client: MaClient, fn: Any, **inputs: Any) -> tuple[str, str, dict[str, Any]]:
    wf = client.create_workflow()
    t = wf.add_task(fn, inputs=inputs)
    run_id = wf.run()
    client.wait_run(run_id, timeout=120)
    row = httpx.get(f"{client.server_url}/runs/{run_id}/tasks/{t.task_id}", timeout=10).json()
    return run_id, t.task_id, row


def _result(client: MaClient, fn: Any, **inputs: Any) -> dict[str, Any]:
    wf = client.create_workflow()
    t = wf.add_task(fn, inputs=inputs)
    summary = wf.show_results(wf.run())
    assert summary["state"] == "succeeded", summary
    return dict(summary["task_results"][t.task_id])


# ---- what a sandbox sees ----------------------------------------------------------------------
@task(sandbox=True)
def look_around(data_dir: str = "", head_pid: int = 0) -> dict:
    seen: dict = {"cwd": os.getcwd(), "env": dict(os.environ)}
    seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    seen["head_pid_visible"] = os.path.exists(f"/proc/{head_pid}")
    try:
        seen["data_dir"] = sorted(os.listdir(data_dir))
    except OSError as exc:
        seen["data_dir"] = f"{type(exc).__name__}"
    for name in ("nats-users.json", "nats-server.conf", "api-token"):
        try:
            seen[name] = Path(data_dir, name).read_text()
        except OSError as exc:
            seen[name] = f"{type(exc).__name__}"
    with open("/proc/self/status") as status:
        seen["caps"] = next(line.split()[1] for line in status if line.startswith("CapEff"))
    writes = {}
    for target in (os.path.join(data_dir, "planted"), "/etc/planted", "/usr/planted", "/root/planted"):
        try:
            Path(target).write_text("x")
            writes[target] = "written"
        except OSError as exc:
            writes[target] = type(exc).__name__
    seen["writes"] = writes
    Path("/tmp/private-tmp-file").write_text("gone with the sandbox")
    print("printed inside the sandbox", flush=True)
    os.system("echo printed by a child process inside the sandbox >&2")
    return seen


@task(sandbox=True)
def connect_to(port: int = 0) -> dict:
    import socket

    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
        return {"connect": "connected"}
    except OSError as exc:
        return {"connect": type(exc).__name__, "errno": exc.errno}
    finally:
        sock.close()


@task(sandbox=True, network=True)
def connect_with_network(port: int = 0) -> dict:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return {"connect": "connected"}


def test_the_node_says_it_can_sandbox(sandbox_head: HeadProcess) -> None:
    nodes = httpx.get(f"{sandbox_head.url}/cluster/resources", timeout=10).json()["nodes"]
    assert len(nodes) == 1
    sandbox = nodes[0]["sandbox"]
    assert sandbox["available"] is True
    assert sandbox["limits"] in ("cgroup2", "cgroup1", "rlimit")


def test_a_sandboxed_task_sees_only_its_own_world(sb_client: MaClient, sandbox_head: HeadProcess) -> None:
    data_dir = str(sandbox_head.data_dir)
    assert (sandbox_head.data_dir / "nats-users.json").exists(), "the head keeps NATS credentials there"
    assert sandbox_head.proc is not None
    wf = sb_client.create_workflow()
    t = wf.add_task(look_around, inputs={"data_dir": data_dir, "head_pid": sandbox_head.proc.pid})
    run_id, task_id = wf.run(), t.task_id
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded", summary
    seen = summary["task_results"][task_id]
    # its own directory, its home
    assert seen["cwd"] == "/tmp/attempt"
    assert seen["env"]["HOME"] == "/tmp/attempt"
    # the environment is the allowlist plus the attempt's context: nothing of the worker's own
    assert seen["env"]["MAZE_RUN_ID"] == run_id and seen["env"]["MAZE_TASK_ID"] == task_id
    assert seen["env"]["MAZE_ATTEMPT"] == "1"
    assert SECRET_ENV not in seen["env"]
    assert not [k for k in seen["env"] if "NATS" in k or "TOKEN" in k], seen["env"]
    # the head's data dir is an empty mount: no store, no credentials
    assert seen["data_dir"] == []
    for name in ("nats-users.json", "nats-server.conf", "api-token"):
        assert seen[name] == "FileNotFoundError", name
    # no capabilities, and a PID namespace of its own: the head's process is not there
    assert int(seen["caps"], 16) == 0
    assert seen["head_pid_visible"] is False and max(seen["pids"]) < 20, seen["pids"]
    # nothing written outside its directory
    assert set(seen["writes"].values()) == {"OSError"}, seen["writes"]  # EROFS: read-only
    assert not (sandbox_head.data_dir / "planted").exists()
    assert not Path("/tmp/private-tmp-file").exists(), "its /tmp was its own"
    # what it printed (and what its child printed) is in the run's logs
    lines = {(ln["stream"], ln["line"]) for ln in sb_client.get_run_logs(run_id, tail=None)}
    assert ("stdout", "printed inside the sandbox") in lines
    assert ("stderr", "printed by a child process inside the sandbox") in lines
    # its directory is gone once it is recorded
    work = sandbox_head.data_dir / "work" / run_id
    wait_until(lambda: not work.exists(), timeout=10)


def test_no_socket_reaches_the_head_without_network(sb_client: MaClient, sandbox_head: HeadProcess) -> None:
    seen = _result(sb_client, connect_to, port=sandbox_head.port)
    assert seen["connect"] == "ConnectionRefusedError", seen  # its own loopback, nothing listens
    # nor with network allowed: that is outbound, never the host's loopback (the head's API is
    # open there); tests/test_sandbox_escapes.py shows it reaches out
    wf = sb_client.create_workflow()
    t = wf.add_task(connect_with_network, inputs={"port": sandbox_head.port})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "failed", summary
    assert t.task_id in summary["exception_tasks"]


# ---- limits -----------------------------------------------------------------------------------
LIMITED = probe_cgroups(f"test-{os.getpid()}")
if LIMITED is not None:
    LIMITED.close()
ROOT_WITHOUT_CGROUPS = LIMITED is None and os.getuid() == 0


@task(sandbox=True, resources={"cpu_mem": 200})
def memory_hog(mb: int = 2048) -> dict:
    hog = b"x" * (mb * 1024 * 1024)
    return {"held": len(hog)}


def test_a_memory_hog_is_killed_at_its_cpu_mem(sb_client: MaClient) -> None:
    _, _, row = _run_one(sb_client, memory_hog, mb=2048)
    assert row["state"] == "failed", row
    error = row["error"]
    if LIMITED is not None:
        assert error["error_type"] == "out_of_memory", error
        assert "memory limit of 200 MB" in error["message"]
    else:  # RLIMIT_AS: the allocation is refused inside
        assert error["exception_type"] == "MemoryError", error


@task(sandbox=True, timeout_seconds=60)
def fork_bomb(seconds: float = 3.0) -> dict:
    import subprocess
    import time

    subprocess.Popen(["/bin/sh", "-c", "b(){ b|b& }; b"])
    time.sleep(seconds)
    raise RuntimeError("the bomb went off")


@task
def healthy(n: int = 0) -> dict:
    return {"n": n + 1}


def _bombs() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[-1:] == ["b(){ b|b& }; b"]:
            found.append(proc)
    return found


@pytest.mark.skipif(
    ROOT_WITHOUT_CGROUPS, reason="no writable cgroup: a root worker's sandbox has no process limit"
)
def test_a_fork_bomb_is_contained_and_ended_with_its_attempt(sb_client: MaClient) -> None:
    _, _, row = _run_one(sb_client, fork_bomb, seconds=3.0)
    assert row["state"] == "failed", row
    error = row["error"]
    assert error["error_type"] == "user_code" and "the bomb went off" in error["message"]
    if LIMITED is not None:  # the cgroup counts what it refused, and the worker says so
        assert "refused" in error["message"] and "at its limit of 256" in error["message"], error
    else:  # RLIMIT_NPROC refuses the forks inside (the shell says so); nothing counts them
        assert "refused" not in error["message"], error
    # the whole sandbox is killed with its attempt: no bomb process is left on the machine
    wait_until(lambda: not _bombs(), timeout=20)
    # and the node goes on working
    assert _result(sb_client, healthy, n=1) == {"n": 2}


# ---- placement --------------------------------------------------------------------------------
@task(sandbox=True)
def needs_sandbox(n: int = 0) -> dict:
    return {"n": n}


@task
def slow_source(seconds: float = 0.0) -> dict:
    import time

    time.sleep(seconds)
    return {"n": 7}


def test_no_sandbox_node_refuses_a_sandboxed_task(tmp_path: Path) -> None:
    """A run with a sandboxed task is refused at submission where no node could ever sandbox it,
    and waits with the reason where the only node that could left."""
    head = HeadProcess(tmp_path / "head", extra=["--no-local-worker"])
    head.start()
    plain = WorkerProcess(head, "plain", ["--no-sandbox", "--cpus", "1"], tmp_path)
    boxed = WorkerProcess(head, "boxed", ["--cpus", "1"], tmp_path)
    try:
        plain.start()
        client = MaClient(head.url)
        wf = client.create_workflow()
        wf.add_task(needs_sandbox, inputs={"n": 1})
        with pytest.raises(Exception) as refused:
            wf.run()
        assert "needs a sandbox, node has none" in str(refused.value)
        assert "--no-sandbox" in str(refused.value)
        # a node that can sandbox joins: accepted; then it leaves before the task is ready
        boxed.start()
        wf = client.create_workflow()
        src = wf.add_task(slow_source, inputs={"seconds": 3.0})
        dst = wf.add_task(needs_sandbox, inputs={"n": src.outputs["n"]})
        run_id = wf.run()
        boxed.stop()

        def reason() -> str | None:
            row = httpx.get(f"{head.url}/runs/{run_id}/tasks/{dst.task_id}", timeout=10).json()
            return (
                row.get("pending_reason") if row["state"] == "pending" and row.get("pending_reason") else None
            )

        def source_done() -> bool:
            row = httpx.get(f"{head.url}/runs/{run_id}/tasks/{src.task_id}", timeout=10).json()
            return bool(row["state"] == "succeeded")

        wait_until(source_done, timeout=60)
        why = wait_until(reason, timeout=30)
        assert "needs a sandbox, node has none" in why and "plain" in why, why
        # never run unsandboxed on the node that cannot
        time.sleep(1.0)
        row = httpx.get(f"{head.url}/runs/{run_id}/tasks/{dst.task_id}", timeout=10).json()
        assert row["state"] == "pending" and row["attempt"] == 0, row
        client.cancel_run(run_id)
    finally:
        for proc in (boxed, plain):
            if proc.proc is not None and proc.proc.poll() is None:
                proc.stop()
        head.stop()


# ---- exec_code --------------------------------------------------------------------------------
def test_exec_code_runs_a_snippet_in_a_sandbox(sb_client: MaClient, sandbox_head: HeadProcess) -> None:
    code = (
        "import os, pathlib, sys\n"
        "data = pathlib.Path('input.csv').read_text()\n"
        "pathlib.Path('out').mkdir()\n"
        "pathlib.Path('out/sum.txt').write_text(str(sum(int(x) for x in data.split(','))))\n"
        "pathlib.Path('blob.bin').write_bytes(bytes([0, 255, 1]))\n"
        "print('rows', data.count(',') + 1)\n"
        "print('oops', file=sys.stderr)\n"
        f"print(os.path.exists({str(sandbox_head.data_dir / 'nats-users.json')!r}))\n"
        "sys.exit(3)\n"
    )
    got = sb_client.exec_code(code, files={"input.csv": "1,2,3", "keep.txt": b"same"})
    assert got["stdout"] == "rows 3\nFalse\n"
    assert got["stderr"] == "oops\n"
    assert got["exit_code"] == 3 and got["timed_out"] is False
    # what it made or changed; not the files given and left as they were
    assert got["files"] == {"out/sum.txt": "6", "blob.bin": bytes([0, 255, 1])}
    assert got["files_skipped"] == {} and got["truncated"] == []
    # a run as any other, in the history
    assert sb_client.get_run(got["run_id"])["state"] == "succeeded"


def test_exec_code_timeout_and_bad_input(sb_client: MaClient) -> None:
    got = sb_client.exec_code("import time\nprint('before', flush=True)\ntime.sleep(30)\n", timeout_seconds=1)
    assert got["timed_out"] is True and got["exit_code"] == -9
    assert got["stdout"] == "before\n"
    assert "killed after its timeout of 1s" in got["stderr"]
    for files in ({"../escape.txt": "x"}, {"/etc/passwd": "x"}, {"a/../../b": "x"}):
        with pytest.raises(ValidationError, match="relative path inside the sandbox"):
            sb_client.exec_code("print(1)", files=files)
    with pytest.raises(ValidationError, match="timeout_seconds"):
        sb_client.exec_code("print(1)", timeout_seconds=0)
    for files in ({".": "x"}, {"a/": "x"}, {"a": "x", "a/b": "y"}):
        with pytest.raises(ValidationError, match=r"relative path inside the sandbox|also the directory"):
            sb_client.exec_code("print(1)", files=files)
    with pytest.raises(ValidationError, match="cpu_mem"):
        sb_client.exec_code("print(1)", cpu_mem=0)


def test_exec_code_output_is_capped_and_its_memory_is_its_own(sb_client: MaClient) -> None:
    got = sb_client.exec_code(
        "import sys\nsys.stdout.write('y' * (3 * 1024 * 1024))\nprint('end', file=sys.stderr)\n"
    )
    assert got["exit_code"] == 0 and got["truncated"] == ["stdout"], {
        k: v for k, v in got.items() if "std" not in k
    }
    assert got["stdout"] == "y" * (1024 * 1024) and got["stderr"] == "end\n"
    hog = "b = b'x' * ({} * 1024 * 1024)\nprint(len(b))\n"
    # 1024 MB by default, not the node's whole memory; more when asked for
    assert sb_client.exec_code(hog.format(600))["exit_code"] == 0
    assert sb_client.exec_code(hog.format(1500))["exit_code"] != 0
    assert sb_client.exec_code(hog.format(1500), cpu_mem=2048)["exit_code"] == 0
