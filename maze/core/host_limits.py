"""The CPUs and memory this process may really use: its CPU affinity, and the quotas of its cgroup
(a container's `--cpus 2` and `--memory 4g` are cgroup limits; the kernel still shows the whole
host in `os.cpu_count()` and `/proc/meminfo`). A worker in a container advertising the host's 64
cores and 256 GiB would be handed work its quota then throttles or OOM-kills.

cgroup v2 (`0::<path>` in /proc/self/cgroup: `cpu.max`, `memory.max`) and v1 (`cpu.cfs_quota_us`
and `cpu.cfs_period_us`, `memory.limit_in_bytes`) are read for the process's own group and every
group above it (a parent's limit holds too); the smallest one counts. A group whose folder is not
visible (a cgroup namespace shows the process's group as `/`, or a path not mounted here) adds
nothing: the walk up still reads the mount's root.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(root: Path | None = None, proc_cgroup: Path | None = None) -> float:
    """The cores this process may run on, less where its cgroup's quota allows fewer (a quota of
    1.5 CPUs gives 1.5)."""
    return cpus_within(cgroup_cpu_quota(root, proc_cgroup))


def cpus_within(quota: float | None) -> float:
    """The cores this process may run on, capped at a CPU quota (None: none)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return float(cores) if quota is None else max(0.01, min(float(cores), quota))


def usable_cores(root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """`usable_cpus` as whole processes worth running side by side (at least one)."""
    return max(1, math.floor(usable_cpus(root, proc_cgroup) + 1e-9))


def usable_memory_mb(root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """The machine's memory, less where the cgroup's limit allows less."""
    return memory_mb_within(cgroup_memory_limit(root, proc_cgroup))


def memory_mb_within(limit: int | None) -> int:
    """The machine's memory, capped at a memory limit in bytes (None: none)."""
    total = psutil.virtual_memory().total
    return (total if limit is None else min(total, limit)) // (1024 * 1024)


def cgroup_cpu_quota(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """The smallest CPU quota over this process's cgroup and its ancestors, in CPUs; None: none."""
    found: list[float] = []
    for folder in _groups(root, proc_cgroup, "cpu"):
        v2 = _read(folder / "cpu.max")
        if v2 is not None:
            quota, _, period = v2.partition(" ")
            if quota != "max" and quota.isdigit() and period.strip().isdigit() and int(period) > 0:
                found.append(int(quota) / int(period))
            continue
        quota_v1, period_v1 = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota_v1 and period_v1 and quota_v1.isdigit() and period_v1.isdigit() and int(period_v1) > 0:
            found.append(int(quota_v1) / int(period_v1))  # -1 (no quota) is not digits
    return min(found) if found else None


def cgroup_memory_limit(root: Path | None = None, proc_cgroup: Path | None = None) -> int | None:
    """The smallest memory limit over this process's cgroup and its ancestors, in bytes; None: none
    (v1 writes "no limit" as a number near 2**63)."""
    found: list[int] = []
    for folder in _groups(root, proc_cgroup, "memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):
            value = _read(folder / name)
            if value is not None and value.isdigit() and int(value) < 2**62:
                found.append(int(value))
    return min(found) if found else None


def _groups(root: Path | None, proc_cgroup: Path | None, controller: str) -> list[Path]:
    """The folders of this process's group of `controller` and of each group above it (under
    `root`, CGROUP_ROOT unless a test says, as `proc_cgroup` names them)."""
    root = root or CGROUP_ROOT
    text = _read(proc_cgroup or PROC_CGROUP) or ""
    candidates: list[tuple[Path, str]] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2: one tree for every controller
            candidates.append((root, path))
        elif controller in controllers.split(","):  # v1: a tree per controller (or a few, joined)
            for mount in (root / controllers, root / controller):
                if _is_dir(mount):
                    candidates.append((mount, path))
                    break
    folders: list[Path] = []
    for mount, path in candidates:  # a group not visible here (a namespace) adds nothing: _read skips it
        parts = [p for p in path.strip().split("/") if p]
        folders.extend(mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1))
    return folders


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # not ours to look into (Python 3.11 raises on EACCES)
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
