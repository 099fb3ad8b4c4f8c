"""A sandbox with network starts every time, on a busy machine too: slirp4netns is attached
only once bubblewrap has set up the namespace's loopback (slirp4netns brings `lo` up, and
bubblewrap's own address request then fails: "loopback: Failed RTM_NEWADDR"). Real bubblewrap
and slirp4netns, as a worker starts them (maze/workers/sandbox_net.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from maze.workers.sandbox import bwrap_argv, find_bwrap
from maze.workers.sandbox_net import SandboxNet, find_slirp
from tests.test_sandbox import WHY_NOT

pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"no sandbox on this machine: {WHY_NOT}"),
    pytest.mark.skipif(find_slirp() is None, reason="slirp4netns is not installed: no sandbox has network"),
]


@pytest.fixture
def busy_cpus() -> Iterator[None]:
    """Every core kept busy, as on a loaded worker: the race showed there (one start in five)."""
    import os

    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()


def _start_one(tmp: Path, bwrap: str, slirp: str) -> tuple[int, str, str | None]:
    net = SandboxNet(slirp)
    command = ["/bin/sh", "-c", "grep -q tap0 /proc/net/dev"]  # slirp4netns's device is there
    argv = bwrap_argv(bwrap, str(tmp), [], True, command, net.bwrap_args(None))
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=net.child_fds,
            close_fds=True,
        )
    except BaseException:
        net.abandon()
        raise
    net.spawned(popen)
    try:
        _, err = popen.communicate(timeout=30)
    finally:
        net.close()
    return popen.returncode, err.decode("utf-8", "replace").strip(), net.error


def test_network_sandboxes_start_every_time_on_a_busy_machine(tmp_path: Path, busy_cpus: None) -> None:
    bwrap, slirp = find_bwrap(), find_slirp()
    assert bwrap is not None and slirp is not None
    failed = []
    for i in range(100):
        box = tmp_path / str(i)
        box.mkdir()
        rc, said, error = _start_one(box, bwrap, slirp)
        if rc != 0 or error is not None:
            failed.append((rc, said, error))
    assert failed == [], failed
