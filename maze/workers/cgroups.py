"""Memory and process-count limits for sandboxed attempts, from cgroups where this worker may
write them (v2 first, else v1's memory and pids hierarchies), probed at the worker's start.

Each sandbox gets a group of its own under one group of the worker's; its first process is put in
it before bubblewrap starts (maze/workers/sandbox.py), so everything the task starts is in it.
Without writable cgroups the sandbox falls back to rlimits set by the task process itself
(RLIMIT_AS for memory; RLIMIT_NPROC, which does not bind a task whose user is root outside the
sandbox: README, "Sandboxed execution")."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
import uuid
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)
CONTROLLERS = ("memory", "pids")


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount point, root, fs type, super options) of each cgroup mount of this process."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4], fields[3], tail[0], tail[2]))
    return found


def _own_paths() -> dict[str, str]:
    """This process's group per controller ("" for the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _base(mount: str, root: str, own: str) -> Path:
    """Where this process's own group is under a mount (the mount itself if it is not there)."""
    rel = own[len(root) :] if root != "/" and own.startswith(root) else own
    path = Path(mount) / rel.lstrip("/")
    return path if path.is_dir() else Path(mount)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _counter(path: Path, key: str) -> int:
    """A `key value` line's value in a cgroup's flat-keyed file (0 when absent)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


class SandboxGroup:
    """One sandbox's cgroup(s)."""

    def __init__(self, kind: str, dirs: dict[str, Path]) -> None:
        self.kind = kind
        self.dirs = dirs  # controller ("" for v2) -> its directory

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def limit(self, memory_bytes: int | None, pids: int) -> None:
        if self.kind == "cgroup2":
            d = self.dirs[""]
            _write(d / "pids.max", str(pids))
            if memory_bytes:
                _write(d / "memory.max", str(memory_bytes))
                with contextlib.suppress(OSError):  # no swap to escape the limit into
                    _write(d / "memory.swap.max", "0")
            return
        _write(self.dirs["pids"] / "pids.max", str(pids))
        if memory_bytes:
            _write(self.dirs["memory"] / "memory.limit_in_bytes", str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(self.dirs["memory"] / "memory.memsw.limit_in_bytes", str(memory_bytes))

    def oom_kills(self) -> int:
        if self.kind == "cgroup2":
            return _counter(self.dirs[""] / "memory.events", "oom_kill")
        return _counter(self.dirs["memory"] / "memory.oom_control", "oom_kill")

    def forks_refused(self) -> int:
        d = self.dirs["" if self.kind == "cgroup2" else "pids"]
        return _counter(d / "pids.events", "max")

    def empty(self) -> bool:
        """No process left in the group (or the group is gone)."""
        for d in self.dirs.values():
            try:
                if (d / "cgroup.procs").read_text().split():
                    return False
            except OSError:
                continue
        return True

    def kill(self) -> None:
        """SIGKILL to every process in the group."""
        if self.kind == "cgroup2":
            with contextlib.suppress(OSError):
                _write(self.dirs[""] / "cgroup.kill", "1")
                return
        for d in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        """Remove the group (once its processes are gone; the kernel refuses it before)."""
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                d.rmdir()


class Cgroups:
    """Where this worker makes its sandboxes' groups."""

    def __init__(self, kind: str, parents: dict[str, Path]) -> None:
        self.kind = kind
        self.parents = parents

    def make(self) -> SandboxGroup:
        name = f"sb-{uuid.uuid4().hex[:12]}"
        dirs = {}
        try:
            for controller, parent in self.parents.items():
                path = parent / name
                path.mkdir()
                dirs[controller] = path
        except OSError:
            SandboxGroup(self.kind, dirs).remove()
            raise
        return SandboxGroup(self.kind, dirs)

    def close(self) -> None:
        """Remove this worker's groups (as it stops; a sandbox still in one is killed first)."""
        self.sweep()
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                parent.rmdir()

    def sweep(self) -> None:
        """Remove every sandbox group of this worker's (at its start: those an earlier run of it,
        killed, left behind; as it stops: its own), a process still in one killed first."""
        for parent in self.parents.values():
            for child in parent.glob("sb-*"):
                group = SandboxGroup(self.kind, {"": child} if self.kind == "cgroup2" else {"pids": child})
                for _ in range(50):
                    group.kill()
                    group.remove()
                    if not child.exists():
                        break
                    time.sleep(0.02)


def _v2(label: str) -> Cgroups | None:
    mounts = [m for m in _mounts() if m[2] == "cgroup2"]
    if not mounts:
        return None
    mount, root, _, _ = mounts[0]
    base = _base(mount, root, _own_paths().get("", "/"))
    try:
        available = (base / "cgroup.controllers").read_text().split()
    except OSError:
        return None
    if not all(c in available for c in CONTROLLERS):
        return None
    parent = base / f"maze-{label}"
    try:
        parent.mkdir(exist_ok=True)
        enabled = (base / "cgroup.subtree_control").read_text().split()
        if not all(c in enabled for c in CONTROLLERS):
            # refused (EBUSY) where this process's own group holds processes and is not the root
            _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
    except OSError as exc:
        with contextlib.suppress(OSError):
            parent.rmdir()
        log.info(
            "sandbox.cgroup2_unusable", base=str(base), error=errno.errorcode.get(exc.errno or 0, str(exc))
        )
        return None
    return Cgroups("cgroup2", {"": parent})


def _v1(label: str) -> Cgroups | None:
    own = _own_paths()
    parents: dict[str, Path] = {}
    for controller in CONTROLLERS:
        mount = next((m for m in _mounts() if m[2] == "cgroup" and controller in m[3].split(",")), None)
        if mount is None:
            return None
        parent = _base(mount[0], mount[1], own.get(controller, "/")) / f"maze-{label}"
        try:
            parent.mkdir(exist_ok=True)
        except OSError:
            return None
        parents[controller] = parent
    return Cgroups("cgroup1", parents)


def probe_cgroups(label: str) -> Cgroups | None:
    """This worker's sandbox groups, where it may make them and limit memory and pids in them;
    None where it may not. Tried for real: a group is made, limited and removed."""
    for make in (_v2, _v1):
        groups = make(label)
        if groups is None:
            continue
        try:
            group = groups.make()
            try:
                group.limit(64 * 1024 * 1024, 64)
            finally:
                group.remove()
        except OSError as exc:
            log.info("sandbox.cgroup_unusable", kind=groups.kind, error=str(exc))
            groups.close()
            continue
        return groups
    return None
