"""App runs from maze.yaml on a real head and its local worker (README, "maze.yaml applications"):
`maze run --wait`, artifacts by pattern, logs, retries on a failed command, `maze runs retry`, no
shell unless asked, the environment allowlist, conda absent, a sandboxed app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maze import MaClient
from tests.helpers import HeadProcess

SECRET = "MAZE_APP_TEST_SECRET"
PY = sys.executable

JOB = """
import json, os, sys
from pathlib import Path
print("hello from the app", flush=True)
print("line two", file=sys.stderr, flush=True)
Path("outputs").mkdir(exist_ok=True)
Path("outputs/result.txt").write_text(Path("input.txt").read_text().upper())
Path("outputs/env.json").write_text(json.dumps(dict(os.environ)))
Path("scratch.tmp").write_text("not an artifact")
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def app_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """A head with its embedded NATS and local worker; its environment holds a secret that no
    app may see (and PYTHONPATH, which is not on the allowlist either)."""
    os.environ[SECRET] = "not-for-apps"
    head = HeadProcess(tmp_path_factory.mktemp("apphead"), extra=["--cpus", "2"])
    try:
        head.start()
        yield head
        assert head.stop() == 0, head.log()
    finally:
        os.environ.pop(SECRET, None)
        if head.proc is not None and head.proc.poll() is None:
            head.kill9()


def _maze(head: HeadProcess | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    server = ["--server-url", head.url] if head is not None else []
    return subprocess.run(
        [PY, "-m", "maze", *args, *server],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def _app(tmp_path: Path, spec: str, files: dict[str, str] | None = None) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (ws / name).write_text(text)
    path = tmp_path / "maze.yaml"
    path.write_text(textwrap.dedent(spec))
    return path


def test_maze_run_wait_artifacts_logs_and_retry(app_head: HeadProcess, tmp_path: Path) -> None:
    spec = _app(
        tmp_path,
        f"""
        name: upper
        command: {PY} job.py
        workspace: ws
        resources: {{cpu: 1}}
        env:
          vars: {{DATASET: sample}}
        artifacts: [outputs/]
        timeout_seconds: 120
        """,
        {"job.py": JOB, "input.txt": "some text"},
    )
    done = _maze(app_head, "run", str(spec), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "succeeded" in out and "exit code 0" in out
    assert "hello from the app" in out and "line two" in out  # followed live
    assert "outputs/result.txt" in out and "outputs/env.json" in out
    assert "scratch.tmp" not in out
    run_id = out.split("run ", 1)[1].split()[0]

    client = MaClient(app_head.url)
    run = client.get_run(run_id)
    assert run["kind"] == "app" and run["state"] == "succeeded"
    artifacts = client.get_run_artifacts(run_id)
    assert sorted(a["path"] for a in artifacts) == ["outputs/env.json", "outputs/result.txt"]
    result = next(a for a in artifacts if a["path"] == "outputs/result.txt")
    assert client.fetch_blob(result["sha256"]) == b"SOME TEXT"
    env = json.loads(
        client.fetch_blob(next(a for a in artifacts if a["path"] == "outputs/env.json")["sha256"])
    )
    assert env["MAZE_RUN_ID"] == run_id
    assert env["MAZE_APP_NAME"] == "upper"
    assert env["MAZE_ATTEMPT"] == "1"
    assert env["MAZE_TASK_ID"] == client.get_run_tasks(run_id)[0]["task_id"]
    assert env["MAZE_NODE_ID"] == client.get_run_tasks(run_id)[0]["node_id"]
    assert env["DATASET"] == "sample"
    assert SECRET not in env and "PYTHONPATH" not in env, sorted(env)
    extra = sorted(k for k in env if k.startswith("MAZE_"))
    assert extra == ["MAZE_APP_NAME", "MAZE_ATTEMPT", "MAZE_NODE_ID", "MAZE_RUN_ID", "MAZE_TASK_ID"]

    logs = _maze(app_head, "runs", "logs", run_id)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert any(line.endswith("stdout hello from the app") for line in lines), lines
    assert any(line.endswith("stderr line two") for line in lines), lines

    listed = httpx.get(f"{app_head.url}/runs", params={"kind": "app"}).json()
    assert run_id in [r["run_id"] for r in listed]
    assert all(r["kind"] == "app" for r in listed)
    assert run_id in [r["run_id"] for r in client.list_runs(kind="app", limit=100)]
    assert run_id not in [r["run_id"] for r in client.list_runs(kind="static", limit=100)]

    again = _maze(app_head, "runs", "retry", run_id)
    assert again.returncode == 0, again.stderr
    new_id = again.stdout.split()[1]
    final = client.wait_run(new_id, timeout=120)
    assert final["kind"] == "app" and final["state"] == "succeeded" and final["retry_of"] == run_id
    assert sorted(a["path"] for a in client.get_run_artifacts(new_id)) == [
        "outputs/env.json",
        "outputs/result.txt",
    ]


def test_run_without_wait_prints_the_run_id(app_head: HeadProcess, tmp_path: Path) -> None:
    spec = _app(tmp_path, f"name: quick\ncommand: [{PY}, -c, 'print(42)']\nworkspace: ws\n")
    done = _maze(app_head, "run", str(spec))
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    assert run_id.startswith("run_")
    client = MaClient(app_head.url)
    assert client.wait_run(run_id, timeout=120)["state"] == "succeeded"
    assert client.get_run_artifacts(run_id) == []  # no artifacts named: none registered


def test_a_failed_command_is_retried_when_retries_say_so(app_head: HeadProcess, tmp_path: Path) -> None:
    flaky = "import os, sys; print('attempt', os.environ['MAZE_ATTEMPT']); sys.exit(1 if os.environ['MAZE_ATTEMPT'] == '1' else 0)"
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "flaky.py").write_text(flaky)
    client = MaClient(app_head.url)
    retried = tmp_path / "retried.yaml"
    retried.write_text(
        f"name: flaky\ncommand: {PY} flaky.py\nworkspace: ws\nretries: {{max: 1, on: [user_code]}}\n"
    )
    result = client.run_app(retried, timeout=120)
    assert result["state"] == "succeeded" and result["exit_code"] == 0 and result["attempts"] == 2, result
    lines = [line["line"] for line in client.get_run_logs(result["run_id"])]
    assert lines == ["attempt 1", "attempt 2"]

    once = tmp_path / "once.yaml"
    once.write_text(f"name: flaky\ncommand: {PY} flaky.py\nworkspace: ws\n")
    done = _maze(app_head, "run", str(once), "--wait")
    assert done.returncode == 1, done.stdout
    assert "failed" in done.stdout and "exit code 1" in done.stdout
    assert "error (user_code): app 'flaky': command exited with code 1" in done.stdout
    result = client.run_app(once, timeout=120)
    assert result["state"] == "failed" and result["exit_code"] == 1 and result["attempts"] == 1
    assert result["error"]["error_type"] == "user_code" and result["error"]["retryable"] is True


def test_no_shell_unless_asked(app_head: HeadProcess, tmp_path: Path) -> None:
    client = MaClient(app_head.url)
    literal = _app(
        tmp_path,
        f"""
        name: literal
        command: {PY} -c "import sys; print(sys.argv[1:])" 'x; echo injected' '$HOME' '`id`'
        workspace: ws
        """,
    )
    result = client.run_app(literal, timeout=120)
    assert result["state"] == "succeeded", result
    lines = [line["line"] for line in client.get_run_logs(result["run_id"])]
    assert lines == ["['x; echo injected', '$HOME', '`id`']"]

    shell = tmp_path / "shell.yaml"
    shell.write_text(
        'name: sh\ncommand: echo "app=$MAZE_APP_NAME"; echo second\nworkspace: ws\nshell: true\n'
    )
    result = client.run_app(shell, timeout=120)
    assert result["state"] == "succeeded", result
    assert [line["line"] for line in client.get_run_logs(result["run_id"])] == ["app=sh", "second"]


def test_conda_absent_fails_clearly_and_is_not_retried(app_head: HeadProcess, tmp_path: Path) -> None:
    if shutil.which("conda"):
        pytest.skip("conda is installed here: this tests a node without it")
    spec = _app(
        tmp_path,
        """
        name: needs-conda
        command: python train.py
        workspace: ws
        env:
          conda: {channels: [conda-forge], dependencies: [python=3.11]}
        retries: {max: 2, on: [environment_error, user_code]}
        """,
    )
    result = MaClient(app_head.url).run_app(spec, timeout=120)
    assert result["state"] == "failed" and result["attempts"] == 1, result
    error = result["error"]
    assert error["error_type"] == "environment_error" and error["retryable"] is False
    assert error["message"].startswith("conda is not installed on node "), error
    assert result["exit_code"] is None


def test_validate_prints_each_error_on_its_own_line(app_head: HeadProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ncommand: run\nworkspace: ./nope\nresources: {cpu: 0}\nretries: {on: [node_lost, foo]}\n"
    )
    done = _maze(None, "app", "validate", str(bad))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{bad}: workspace: directory ./nope does not exist (relative to {tmp_path})",
        f"{bad}: resources.cpu: must be > 0, got 0",
        f"{bad}: retries.on[1]: unknown error type 'foo' (known: artifact_error, environment_error, "
        "event_store_refused, invalid_input, invalid_result, node_lost, out_of_memory, payload_too_large, "
        "process_exited, process_limit, protocol_error, resource_unavailable, sandbox_error, "
        "serialization_error, timed_out, timeout, user_code, worker_error)",
        f"{bad}: 3 error(s)",
    ]
    # `maze run` refuses it the same way, before anything is submitted
    refused = _maze(app_head, "run", str(bad), "--wait")
    assert refused.returncode == 1 and "resources.cpu: must be > 0" in refused.stderr
    good = tmp_path / "good.yaml"
    good.write_text("name: x\ncommand: python train.py\n")
    done = _maze(None, "app", "validate", str(good))
    assert done.returncode == 0, done.stderr
    assert "valid app 'x': python train.py" in done.stdout
    missing = _maze(None, "app", "validate", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 1 and "(file): cannot be read" in missing.stderr


def _bwrap_runs() -> bool:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-user"]
    argv += ["--unshare-pid", "--unshare-net", "--die-with-parent", "--new-session", "true"]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _bwrap_runs(), reason="bubblewrap cannot run here")
def test_a_sandboxed_app(app_head: HeadProcess, tmp_path: Path) -> None:
    probe = (
        "import os, socket; from pathlib import Path; Path('out').mkdir();"
        "Path('out/seen.txt').write_text(os.environ.get('MAZE_SANDBOX', '') + ' ' + os.getcwd());"
        "s = socket.socket();\n"
        "try:\n    s.connect(('1.1.1.1', 53)); print('network')\nexcept OSError:\n    print('no network')\n"
    )
    spec = _app(
        tmp_path,
        "name: boxed\ncommand: [python3, probe.py]\nworkspace: ws\nsandbox: true\nartifacts: [out/]\n",
        {"probe.py": probe},
    )
    client = MaClient(app_head.url)
    result = client.run_app(spec, timeout=120)
    assert result["state"] == "succeeded", result
    assert [a["path"] for a in result["artifacts"]] == ["out/seen.txt"]
    seen = client.fetch_blob(result["artifacts"][0]["sha256"]).decode()
    assert seen == "1 /tmp/attempt"  # MAZE_SANDBOX, and the sandbox's attempt directory
    assert [line["line"] for line in client.get_run_logs(result["run_id"])] == ["no network"]


def test_a_gpu_app_sees_only_its_card(tmp_path: Path) -> None:
    """A head declaring two (nominal) cards: the app asking for one gets CUDA_VISIBLE_DEVICES set
    to the card it was placed on, through the environment allowlist."""
    head = HeadProcess(tmp_path / "gpuhead", extra=["--cpus", "1", "--gpus", "2x16GB"])
    head.start()
    try:
        spec = _app(
            tmp_path,
            f"name: gpu\ncommand: [{PY}, -c, \"import os; print(os.environ['CUDA_VISIBLE_DEVICES'])\"]\n"
            "workspace: ws\nresources: {gpu: 1, gpu_mem: 1000}\n",
        )
        client = MaClient(head.url)
        result = client.run_app(spec, timeout=120)
        assert result["state"] == "succeeded", result
        placed = client.get_run_tasks(result["run_id"])[0]["gpus"]
        assert len(placed) == 1
        assert [line["line"] for line in client.get_run_logs(result["run_id"])] == [str(placed[0])]
    finally:
        assert head.stop() == 0, head.log()


def test_a_workflow_task_names_its_artifacts_and_kinds_are_checked(
    app_head: HeadProcess, tmp_path: Path
) -> None:
    from maze import task

    @task(artifacts=["keep/", "*.csv"])
    def make(n: int = 0) -> dict:
        Path("keep").mkdir()
        Path("keep/a.txt").write_text("a")
        Path("top.csv").write_text("x,y")
        Path("drop.txt").write_text("no")
        return {"n": n}

    @task
    def make_all(n: int = 0) -> dict:
        Path("drop.txt").write_text("yes")
        return {"n": n}

    client = MaClient(app_head.url)
    wf = client.create_workflow()
    picky = wf.add_task(make, inputs={"n": 1})
    every = wf.add_task(make_all, inputs={"n": 2})
    run_id = wf.run(artifact_mode=True)
    assert client.wait_run(run_id, timeout=120)["kind"] == "static"
    found = {(a["task_id"], a["path"]) for a in client.get_run_artifacts(run_id)}
    assert found == {(picky.task_id, "keep/a.txt"), (picky.task_id, "top.csv"), (every.task_id, "drop.txt")}

    # a kind one cannot submit, and a pattern that leaves the attempt's directory: 400s
    body = {"tasks": [{"task_id": "t", "func_hash": "0" * 64}], "kind": "react"}
    answer = httpx.post(f"{app_head.url}/runs", json=body)
    assert answer.status_code == 400 and "kind" in answer.json()["error"]["message"], answer.text
    body = {"tasks": [{"task_id": "t", "func_hash": "0" * 64, "artifacts": ["../x"]}]}
    answer = httpx.post(f"{app_head.url}/runs", json=body)
    assert answer.status_code == 400, answer.text
    assert (
        answer.json()["error"]["message"]
        == "task 't': artifacts[0] '../x' must not hold '..', '.' or empty segments"
    )
