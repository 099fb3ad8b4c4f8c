"""Pure parts of sandboxing: the resource flags, the fit rule and placement with them, the
bubblewrap command line, the sandbox's environment, and how tasks' rows show the flags."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from maze.core.errors import ValidationError
from maze.core.resources import Usage, could_ever_fit, fits, fits_assigned, normalize_resources
from maze.events.nodes import NodeJoined
from maze.events.specs import NodeCapacity, Resources
from maze.head.placer import Placement, Placer
from maze.projections.fold import resources_json
from maze.sdk.task import task, task_meta
from maze.workers.sandbox import SANDBOX_DIR, attempt_env, bwrap_argv, sandbox_env

PLAIN = NodeCapacity(
    cpus=4, memory_mb=8000, sandbox=False, sandbox_limits="bubblewrap (bwrap) is not installed"
)
BOXED = NodeCapacity(cpus=4, memory_mb=8000, sandbox=True, sandbox_limits="cgroup2")


def test_resource_flags_are_booleans_and_network_needs_a_sandbox() -> None:
    assert normalize_resources({"sandbox": True}) == Resources(sandbox=True)
    assert normalize_resources({"sandbox": True, "network": True}) == Resources(sandbox=True, network=True)
    assert normalize_resources({}) == Resources()
    with pytest.raises(ValidationError, match="'sandbox' must be true or false"):
        normalize_resources({"sandbox": 1})
    with pytest.raises(ValidationError, match="applies to sandboxed tasks only"):
        normalize_resources({"network": True})


def test_the_decorator_sends_the_flags_only_when_set() -> None:
    @task(sandbox=True, network=True)
    def boxed(x: int = 0) -> dict:
        return {"x": x}

    @task
    def plain(x: int = 0) -> dict:
        return {"x": x}

    assert task_meta(boxed).resources["sandbox"] is True and task_meta(boxed).resources["network"] is True
    assert "sandbox" not in task_meta(plain).resources and "network" not in task_meta(plain).resources
    with pytest.raises(ValidationError, match="applies to sandboxed tasks only"):
        task(network=True)(lambda: {})


def test_a_sandboxed_request_never_fits_a_node_without_a_sandbox() -> None:
    req = Resources(sandbox=True)
    assert could_ever_fit(PLAIN, req) == (
        "needs a sandbox, node has none (bubblewrap (bwrap) is not installed)"
    )
    assert could_ever_fit(BOXED, req) is None
    assert fits(PLAIN, Usage(), req) is None
    assert fits(BOXED, Usage(), req) == []
    assert fits_assigned(PLAIN, Usage(), req, []) is False
    assert fits_assigned(BOXED, Usage(), req, []) is True
    # a task asking for no sandbox fits either
    assert could_ever_fit(PLAIN, Resources()) is None and fits_assigned(PLAIN, Usage(), Resources(), [])
    # an older node that reports nothing about sandboxes cannot hold one
    old = NodeCapacity(cpus=4, memory_mb=8000)
    assert could_ever_fit(old, req) == "needs a sandbox, node has none (it did not report a sandbox)"


def _join(placer: Placer, node_id: str, capacity: NodeCapacity) -> None:
    placer.node_joined(
        NodeJoined(
            node_id=node_id,
            session=f"s-{node_id}",
            at_ms=1,
            hostname=node_id,
            ip="10.0.0.1",
            capacity=capacity,
        )
    )


def test_placement_sends_a_sandboxed_task_only_where_it_can_run_and_says_why_it_waits() -> None:
    placer = Placer()
    _join(placer, "plain", PLAIN)
    why = placer.choose("run", Resources(sandbox=True), "t1")
    assert why == (
        "no node can ever hold this task (plain: needs a sandbox, node has none "
        "(bubblewrap (bwrap) is not installed))"
    )
    _join(placer, "boxed", BOXED)
    choice = placer.choose("run", Resources(sandbox=True), "t1")
    assert isinstance(choice, Placement) and choice.node_id == "boxed"
    # the plain node stays usable for plain tasks, and is the less loaded one
    placer.reserve(("run", "t1", 1), "boxed", "s-boxed", Resources(sandbox=True), [])
    plain_choice = placer.choose("run", Resources(), "t2")
    assert isinstance(plain_choice, Placement) and plain_choice.node_id == "plain"


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory outside /tmp (a sandbox's /tmp is its own: nothing under it is listed)."""
    path = Path(tempfile.mkdtemp(prefix="maze-unit-sandbox-", dir=Path.home()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_bwrap_command_line(outside_tmp: Path) -> None:
    tmp_path = outside_tmp
    secret = tmp_path / "data"
    secret.mkdir()
    inner = secret / "work"
    inner.mkdir()
    token = tmp_path / "token"
    token.write_text("t")
    argv = bwrap_argv(
        "/usr/bin/bwrap", "/w/a", [secret, inner, token, tmp_path / "absent", Path("/tmp/x")], False, ["py"]
    )
    text = " ".join(argv)
    assert argv[:5] == ["/usr/bin/bwrap", "--ro-bind", "/", "/", "--dev"]
    assert f"--tmpfs {secret} --remount-ro {secret}" in text
    assert str(inner) not in text, "a path under a hidden one is hidden with it"
    assert f"--ro-bind /dev/null {token}" in text
    assert "absent" not in text and "/tmp/x" not in text
    assert f"--bind /w/a {SANDBOX_DIR} --chdir {SANDBOX_DIR}" in text
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[-2:] == ["--", "py"]
    # the attempt's directory is bound after everything hidden (a bind under a hidden dir shows)
    assert argv.index("--bind") > max(i for i, a in enumerate(argv) if a == "--tmpfs")
    with_network = bwrap_argv("/usr/bin/bwrap", "/w/a", [], True, ["py"])
    assert "--unshare-net" not in with_network and "--unshare-pid" in with_network


def test_the_sandbox_environment_is_an_allowlist() -> None:
    worker_env = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "MAZE_TOKEN": "secret",
        "NATS_URL": "nats://u:p@h",
        "AWS_SECRET_ACCESS_KEY": "k",
        "HOME": "/root",
        "PYTHONPATH": "/elsewhere",
    }
    env = sandbox_env(worker_env, ["", "/nonexistent-dir", str(Path(__file__).parent)])
    assert env["PATH"] == "/usr/bin" and env["LANG"] == "C.UTF-8"
    assert env["HOME"] == SANDBOX_DIR and env["TMPDIR"] == "/tmp"
    assert env["PYTHONPATH"] == str(Path(__file__).parent), "the worker's import path, existing dirs only"
    assert not {"MAZE_TOKEN", "NATS_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert attempt_env("r", "t", 2, "n") == {
        "MAZE_RUN_ID": "r",
        "MAZE_TASK_ID": "t",
        "MAZE_ATTEMPT": "2",
        "MAZE_NODE_ID": "n",
        "MAZE_SANDBOX": "1",
    }


def test_task_rows_show_the_flags_only_when_set() -> None:
    plain = json.loads(resources_json(Resources(cpu=2.0)))
    assert plain == {"cpu": 2.0, "cpu_mem": 0, "gpu": 0.0, "gpu_mem": 0}, "as rows always read"
    boxed = json.loads(resources_json(Resources(sandbox=True)))
    assert boxed["sandbox"] is True and "network" not in boxed
