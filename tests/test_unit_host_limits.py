"""What a node advertises follows its cgroup's quotas (maze/core/host_limits.py): a container's
`--cpus 1.5 --memory 4g` is what the worker offers, not the host's cores and memory. cgroup v2 and
v1 trees are laid out in a temp folder as the kernel shows them."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from maze.core import host_limits
from maze.core.host_limits import (
    cgroup_cpu_quota,
    cgroup_memory_limit,
    usable_cores,
    usable_cpus,
    usable_memory_mb,
)
from maze.workers.capacity import local_capacity

GiB = 1 << 30


def _write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text + "\n")


def _v2(tmp_path: Path, group: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{group}\n")
    return root, proc


def test_v2_takes_the_smallest_limit_of_the_group_and_its_parents(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "/system.slice/worker.scope")
    _write(root, cpu_max="max 100000", memory_max="max")
    _write(root / "system.slice", cpu_max="150000 100000", memory_max=str(8 * GiB))
    _write(root / "system.slice" / "worker.scope", cpu_max="max 100000", memory_max=str(4 * GiB))
    assert cgroup_cpu_quota(root, proc) == 1.5, "the parent's quota holds for its children"
    assert cgroup_memory_limit(root, proc) == 4 * GiB
    cores = len(os.sched_getaffinity(0))
    assert usable_cpus(root, proc) == min(cores, 1.5)
    assert usable_cores(root, proc) == 1
    assert usable_memory_mb(root, proc) == min(psutil.virtual_memory().total, 4 * GiB) // (1 << 20)


def test_v2_in_a_namespace_reads_the_mounts_root(tmp_path: Path) -> None:
    """A container's own cgroup namespace shows its group as `/` (or a path that is not mounted
    here): its limits are the mount's root files."""
    for group in ("/", "/docker/0123abcd"):
        root, proc = _v2(tmp_path, group)
        _write(root, cpu_max="50000 100000", memory_max=str(GiB))
        assert cgroup_cpu_quota(root, proc) == 0.5
        assert cgroup_memory_limit(root, proc) == GiB
        assert usable_cores(root, proc) == 1, "at least one"


def test_no_limit_anywhere_is_the_whole_machine(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "/user.slice")
    _write(root / "user.slice", cpu_max="max 100000", memory_max="max")
    assert cgroup_cpu_quota(root, proc) is None and cgroup_memory_limit(root, proc) is None
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))
    assert usable_memory_mb(root, proc) == psutil.virtual_memory().total // (1 << 20)
    nothing = tmp_path / "no-such"
    assert usable_cpus(nothing, nothing) == len(os.sched_getaffinity(0)), "no cgroup files: affinity alone"


def test_v1_reads_each_controllers_tree(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    cpu = root / "cpu,cpuacct"
    _write(cpu, cpu_cfs_quota_us="-1", cpu_cfs_period_us="100000")
    _write(cpu / "docker", cpu_cfs_quota_us="-1", cpu_cfs_period_us="100000")
    _write(cpu / "docker" / "abc", cpu_cfs_quota_us="100000", cpu_cfs_period_us="100000")
    memory = root / "memory"
    _write(memory, memory_limit_in_bytes="9223372036854771712")  # v1's "no limit"
    _write(memory / "docker" / "abc", memory_limit_in_bytes=str(2 * GiB))
    assert cgroup_cpu_quota(root, proc) == 1.0
    assert cgroup_memory_limit(root, proc) == 2 * GiB
    _write(memory / "docker" / "abc", memory_limit_in_bytes="9223372036854771712")
    assert cgroup_memory_limit(root, proc) is None


def test_a_worker_advertises_its_containers_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, proc = _v2(tmp_path, "/")
    _write(root, cpu_max="150000 100000", memory_max=str(GiB))
    monkeypatch.setattr(host_limits, "CGROUP_ROOT", root)
    monkeypatch.setattr(host_limits, "PROC_CGROUP", proc)
    capacity = local_capacity(None, None, "none")
    assert capacity.cpus == min(len(os.sched_getaffinity(0)), 1.5)
    assert capacity.memory_mb == min(psutil.virtual_memory().total, GiB) // (1 << 20)
    assert local_capacity(8, 100_000, "none").cpus == 8, "what the operator declares still wins"
