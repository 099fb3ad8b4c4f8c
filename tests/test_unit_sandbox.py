"""Pure parts of sandboxing: the resource flags, the fit rule and placement with them, the
bubblewrap command line, the sandbox's environment, and how tasks' rows show the flags."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from maze.core.errors import ValidationError
from maze.core.resources import Usage, could_ever_fit, fits, fits_assigned, normalize_resources
from maze.events.nodes import NodeJoined
from maze.events.specs import NodeCapacity, Resources
from maze.head.placer import Placement, Placer
from maze.projections.fold import resources_json
from maze.sdk.task import task, task_meta
from maze.tasks.exec_code import checked_name, checked_names
from maze.workers.attempt_dir import MARKER, AttemptDirs
from maze.workers.files import _regular_files, open_no_follow
from maze.workers.pool import ReplyReader, ReplyRefused
from maze.workers.sandbox import SANDBOX_DIR, attempt_env, bwrap_argv, sandbox_env
from maze.workers.sandbox_net import loopback_resolver

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
    # with network: a namespace of its own all the same, slirp4netns's fds given to bubblewrap
    with_network = bwrap_argv(
        "/usr/bin/bwrap", "/w/a", [], True, ["py"], ["--info-fd", "5", "--block-fd", "6"]
    )
    assert "--unshare-net" in with_network and "--unshare-pid" in with_network
    assert with_network.index("--block-fd") < with_network.index("--")
    with pytest.raises(ValueError, match="slirp4netns"):
        bwrap_argv("/usr/bin/bwrap", "/w/a", [], True, ["py"])
    # a hidden link is hidden where it points (its own path then leads to the empty mount)
    (tmp_path / "link").symlink_to(secret)
    linked = " ".join(bwrap_argv("/usr/bin/bwrap", "/w/a", [tmp_path / "link"], False, ["py"]))
    assert f"--tmpfs {secret} --remount-ro {secret}" in linked


def test_loopback_resolvers_are_found() -> None:
    assert loopback_resolver("# x\nnameserver 127.0.0.53\noptions edns0\n")
    assert loopback_resolver("nameserver ::1\n")
    assert not loopback_resolver("nameserver 10.255.255.53\nsearch example\n")


def test_a_fresh_work_root_is_marked_and_only_a_marked_one_is_wiped(tmp_path: Path) -> None:
    ours = AttemptDirs(tmp_path / "w")
    assert ours.wipe(".content") == 0 and (tmp_path / "w" / MARKER).exists()
    (tmp_path / "w" / "run" / "t" / "1").mkdir(parents=True)
    (tmp_path / "w" / ".content").mkdir()
    (tmp_path / "w" / ".content" / ("a" * 64)).write_text("kept")
    (tmp_path / "w" / ".content" / f".{'b' * 64}.1.f.part").write_text("half")
    (tmp_path / "w" / ".conda" / "maze-0123").mkdir(parents=True)  # an app's conda environment
    (tmp_path / "w" / ".conda" / "maze-0123" / "ready").write_text("")
    assert ours.wipe(".content", (".conda",)) == 2
    assert sorted(p.name for p in (tmp_path / "w").rglob("*")) == [
        ".conda",
        ".content",
        MARKER,
        "a" * 64,
        "maze-0123",
        "ready",
    ]
    theirs = tmp_path / "home"
    (theirs / "notes").mkdir(parents=True)
    assert AttemptDirs(theirs).wipe(".content") == -1 and (theirs / "notes").exists()


def test_exec_code_file_names() -> None:
    for bad in (".", "a/", "./a", "a//b", "", "/x", "../x", "a/../b", "~/x"):
        with pytest.raises(ValueError):
            checked_name(bad)
    assert checked_name("out/sum.txt") == "out/sum.txt"
    with pytest.raises(ValueError, match="also the directory"):
        checked_names(["a", "a/b"])
    checked_names(["a/b", "a/c", "ab"])


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


def test_files_are_opened_without_following_any_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "SECRET.txt").write_text("secret")
    root = tmp_path / "attempt"
    (root / "real").mkdir(parents=True)
    (root / "real" / "SECRET.txt").write_text("mine")
    (root / "d").symlink_to(outside)  # a directory swapped for a link
    (root / "f.txt").symlink_to(outside / "SECRET.txt")
    os.mkfifo(root / "fifo")
    fd = open_no_follow(root, "real/SECRET.txt")
    try:
        assert os.pread(fd, 100, 0) == b"mine"
    finally:
        os.close(fd)
    for rel in ("d/SECRET.txt", "f.txt", "fifo"):
        with pytest.raises(OSError):
            os.close(open_no_follow(root, rel))
    # the walk lists regular files only, and never enters a linked directory
    assert [rel for rel, _, _ in _regular_files(root)] == ["real/SECRET.txt"]


def _frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload


def test_a_reply_is_read_in_pieces_and_bounded() -> None:
    reader = ReplyReader(limit=100)
    whole = _frame(b"x" * 10)
    assert reader.feed(whole[:2]) is None and reader.feed(whole[2:7]) is None
    assert reader.feed(whole[7:]) == b"x" * 10
    with pytest.raises(ReplyRefused, match="reply is 101 bytes, above the limit of 100"):
        ReplyReader(limit=100).feed(struct.pack("!i", 101))
    with pytest.raises(ReplyRefused, match="more than its reply"):
        ReplyReader(limit=100).feed(_frame(b"ab") + b"junk")
    big = ReplyReader(limit=100)  # the 8-byte length form
    with pytest.raises(ReplyRefused) as refused:
        big.feed(struct.pack("!i", -1) + struct.pack("!Q", 2**40))
    assert refused.value.error_type == "payload_too_large"


def test_a_reply_is_one_buffer_of_its_size_handed_back_as_a_view() -> None:
    payload = msgspec.msgpack.encode({"ok": True, "payload": b"y" * 300_000, "duration_ms": 1})
    reader = ReplyReader(limit=1 << 20)
    whole = struct.pack("!i", -1) + struct.pack("!Q", len(payload)) + payload  # the 8-byte form
    pieces = [whole[i : i + 65536] for i in range(0, len(whole), 65536)]
    assert [reader.feed(p) for p in pieces[:-1]] == [None] * (len(pieces) - 1)
    out = reader.feed(pieces[-1])
    assert isinstance(out, memoryview) and out.obj is reader.body  # no copy of the reply
    assert reader.body is not None and len(reader.body) == len(payload)  # its size, not grown
    assert msgspec.msgpack.decode(out)["payload"] == b"y" * 300_000
    empty = ReplyReader(limit=10)
    assert empty.feed(struct.pack("!i", 0)) == b""


def test_sandbox_network_and_gpus_in_placement() -> None:
    with pytest.raises(ValidationError, match="sandboxed task cannot have a GPU"):
        normalize_resources({"sandbox": True, "gpu_mem": 100})
    req = normalize_resources({"sandbox": True, "network": True})
    node = NodeCapacity(cpus=2, memory_mb=1000, sandbox=True, sandbox_limits="cgroup2")
    assert "needs a sandbox with network" in (could_ever_fit(node, req) or "")
    assert fits(node, Usage(), req) is None and not fits_assigned(node, Usage(), req, [])
    networked = NodeCapacity(
        cpus=2, memory_mb=1000, sandbox=True, sandbox_limits="cgroup2", sandbox_network=True
    )
    assert could_ever_fit(networked, req) is None and fits(networked, Usage(), req) == []
