"""Sandboxed attempts: each runs in a fresh process under bubblewrap (README, "Sandboxed execution").

What the sandbox sees: the system read-only (`/` bound read-only), a private /tmp, its attempt
directory writable (bound at SANDBOX_DIR, its current directory and $HOME), fresh /dev and /proc
in a PID namespace of its own (no other process of the machine is visible), a network namespace
of its own (outbound network without the host's loopback where its task allows it:
maze/workers/sandbox_net.py), no capabilities, a new session (no terminal to inject into), and an
environment that is an allowlist (ENV_ALLOWED) plus the attempt's `MAZE_*` context. Hidden by
empty mounts: the worker's work root (other attempts), data dirs (a co-located head's event store
and tokens), $HOME's credential files (HOME_SECRETS), /run (sockets of the host's daemons) and
/var/tmp. Memory and process count are limited by a cgroup of its own where the worker may make
one (maze/workers/cgroups.py), else by rlimits. When the attempt ends the whole sandbox is killed
(its bwrap process, and with it, --die-with-parent, every process in its PID namespace).

Starting a sandbox costs a Python start (~0.3 s with Maze's imports), so after the first
sandboxed attempt one is kept started ahead (a spare) with an empty directory of its own: an
attempt takes it, and the spare's directory is renamed onto the attempt's (the sandbox's mount
follows the directory), then a new spare starts. The sandbox's process speaks the pool's protocol (maze/workers/child.py) for one attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import structlog

from maze.core.settings import default_data_dir
from maze.events.specs import Resources
from maze.workers.cgroups import Cgroups, SandboxGroup, probe_cgroups
from maze.workers.pool import ProcessPool, TaskProcess, kill_group, reap
from maze.workers.sandbox_net import SandboxNet, find_slirp, sandbox_resolv_conf

log = structlog.get_logger(__name__)

SANDBOX_DIR = "/tmp/attempt"  # the attempt directory, inside the sandbox
ENV_ALLOWED = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM")
HOME_SECRETS = (
    ".maze",
    ".ssh",
    ".aws",
    ".azure",
    ".config",
    ".docker",
    ".kube",
    ".gnupg",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
)
SYSTEM_HIDDEN = ("/run", "/var/tmp")
DEFAULT_PIDS = 256  # processes (threads included) one sandbox may have at once
PROBE_TIMEOUT_S = 30.0
END_TIMEOUT_S = 10.0  # how long a killed sandbox's processes may take to be gone
# puts the shell (and so bwrap, and everything in the sandbox) in the sandbox's cgroups, then
# becomes bwrap: the group holds the sandbox from its first instruction
_JOIN_CGROUPS = (
    'IFS=:; for f in $MAZE_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; '
    'unset IFS MAZE_CGROUP_PROCS; exec "$@"'
)
_SEES_CODE = "import os, sys; sys.exit(0 if os.path.isdir(sys.argv[1]) else 3)"
_CHILD = "import sys; from maze.workers.sandbox_child import main; main(int(sys.argv[1]))"


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def sandbox_env(environ: Mapping[str, str], sys_path: Iterable[str]) -> dict[str, str]:
    """The sandbox's environment: the allowlisted variables of the worker's, $HOME and $TMPDIR of
    its own, and PYTHONPATH as the worker's import path (task code pickled by reference imports
    as it would in the worker's pool). Nothing else: no tokens, no NATS addresses."""
    env = {key: environ[key] for key in ENV_ALLOWED if key in environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = SANDBOX_DIR
    env["TMPDIR"] = "/tmp"
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in sys_path if p and os.path.isdir(p)))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def attempt_env(run_id: str, task_id: str, attempt: int, node_id: str) -> dict[str, str]:
    """The `MAZE_*` context an attempt's code reads in its environment."""
    return {
        "MAZE_RUN_ID": run_id,
        "MAZE_TASK_ID": task_id,
        "MAZE_ATTEMPT": str(attempt),
        "MAZE_NODE_ID": node_id,
        "MAZE_SANDBOX": "1",
    }


def default_hidden(work_root: Path, data_dirs: Iterable[Path] = ()) -> list[Path]:
    """What a sandbox must never read: the work root, the data dirs named, this user's Maze data
    dir and credential files, the host's daemons' sockets."""
    home = Path.home()
    paths = [work_root, default_data_dir(), *data_dirs, *(home / name for name in HOME_SECRETS)]
    return paths + [Path(p) for p in SYSTEM_HIDDEN]


def _covered(path: str, by: str) -> bool:
    return path == by or path.startswith(by.rstrip("/") + "/")


def bwrap_argv(
    bwrap: str,
    host_dir: str,
    hidden: Iterable[Path],
    network: bool,
    command: list[str],
    net_args: list[str] | None = None,
) -> list[str]:
    """The bubblewrap command line of one sandbox whose attempt directory is `host_dir`. Every
    sandbox has a network namespace of its own; one with `network` is connected to the outside
    by slirp4netns (maze/workers/sandbox_net.py), through `net_args` (its fds to bubblewrap)."""
    if network and not net_args:
        raise ValueError("a sandbox with network needs its slirp4netns fds")
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    done: list[str] = ["/tmp"]
    # a hidden path that is a link (or lies under one) is hidden where it really is: its target
    # is reachable by its own name, and the link then leads to the empty mount
    for path in sorted({os.path.realpath(p) for p in hidden}):
        if any(_covered(path, d) for d in done) or not os.path.lexists(path):
            continue  # under the private /tmp or a hidden dir already; absent
        if os.path.isdir(path):
            argv += ["--tmpfs", path, "--remount-ro", path]  # empty, and nothing can be put there
            done.append(path)
        else:
            argv += ["--ro-bind", "/dev/null", path]
    argv += ["--bind", host_dir, SANDBOX_DIR, "--chdir", SANDBOX_DIR]
    argv += ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--unshare-net", *(net_args or [])]
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--"]
    return argv + command


def child_command(conn_fd: int) -> list[str]:
    return [sys.executable, "-P", "-c", _CHILD, str(conn_fd)]


class SandboxError(Exception):
    """A sandbox could not be given what its attempt asks for."""


class PopenProcess:
    """A sandbox's bwrap process, with the parts of multiprocessing's Process the pool uses."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int | None:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


@dataclass
class Support:
    """Whether this worker can sandbox, and how it limits sandboxes (or why it cannot)."""

    ok: bool
    detail: str  # "cgroup2", "cgroup1" or "rlimit"; or the reason
    bwrap: str | None = None
    cgroups: Cgroups | None = None
    slirp: str | None = None  # slirp4netns: sandboxes with network (None: none here)


@dataclass(eq=False)
class Sandbox:
    """What the pool keeps of one sandbox besides its TaskProcess."""

    network: bool
    host_dir: Path
    group: SandboxGroup | None
    spare: bool  # its directory is a spare's, to be renamed onto the attempt's
    memory_mb: int = 0
    stderr: bytes = b""
    net: SandboxNet | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SandboxPool(ProcessPool):
    """Sandboxes, one per attempt, with a spare kept started per network setting in use."""

    single_use = True

    def __init__(
        self,
        support: Support,
        work_root: Path,
        hidden: list[Path],
        node_memory_mb: int,
        pids: int = DEFAULT_PIDS,
        spares: bool = True,
    ) -> None:
        self.support = support
        self.spare_root = work_root / ".sandbox-spares"
        self.work_root = work_root
        self._resolv: tuple[Path | None] | None = None  # made once, where a network sandbox needs it
        self.hidden = hidden
        self.node_memory_mb = node_memory_mb
        self.pids = pids
        self.use_spares = spares
        self.spares: dict[bool, TaskProcess] = {}
        self.boxes: dict[TaskProcess, Sandbox] = {}
        self.idle: list[TaskProcess] = []
        self.busy: set[TaskProcess] = set()
        self.recycle_after = 1

    # ---- starting -----------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing is started before the first sandboxed attempt (most workers never run one);
        from then on a spare is kept started for each network setting used."""

    def _refill(self, network: bool) -> None:
        if self.use_spares and network not in self.spares:
            try:
                self.spares[network] = self._spawn_box(None, network)
            except (OSError, SandboxError) as exc:
                log.warning("sandbox.spare_not_started", error=str(exc))

    def _spawn_box(self, host_dir: Path | None, network: bool) -> TaskProcess:
        assert self.support.bwrap is not None
        spare = host_dir is None
        if host_dir is None:
            host_dir = self.spare_root / uuid.uuid4().hex
            host_dir.mkdir(parents=True)
        net: SandboxNet | None = None
        group: SandboxGroup | None = None
        ours, theirs = socket.socketpair()
        try:
            if network:
                if self.support.slirp is None:
                    raise SandboxError(
                        "this node cannot give a sandbox network: slirp4netns is not installed"
                    )
                if self._resolv is None:
                    self._resolv = (sandbox_resolv_conf(self.work_root),)
                net = SandboxNet(self.support.slirp)
            group = self.support.cgroups.make() if self.support.cgroups is not None else None
            env = sandbox_env(os.environ, sys.path)
            command = child_command(theirs.fileno())
            net_args = net.bwrap_args(self._resolv[0]) if net is not None and self._resolv else None
            argv = bwrap_argv(self.support.bwrap, str(host_dir), self.hidden, network, command, net_args)
            if group is not None:
                group.limit(None, self.pids)
                env["MAZE_CGROUP_PROCS"] = ":".join(group.procs_files)
                argv = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *argv]
            popen = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(), *(net.child_fds if net is not None else ())),
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            if group is not None:
                group.remove()
            if net is not None:
                net.abandon()
            if spare:
                shutil.rmtree(host_dir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        if net is not None:
            net.spawned(popen)
        tp = TaskProcess(proc=PopenProcess(popen), conn=Connection(ours.detach()))
        self.boxes[tp] = Sandbox(network=network, host_dir=host_dir, group=group, spare=spare, net=net)
        return tp

    # ---- attempts -----------------------------------------------------------------------------
    def acquire_for(self, attempt_dir: Path, resources: Resources) -> TaskProcess:
        """A sandbox whose directory is `attempt_dir` (empty, made by AttemptDirs.make), limited
        to the attempt's memory (`cpu_mem`, else the node's) and the pool's process count."""
        network = resources.network
        tp = self.spares.pop(network, None)
        if tp is not None and tp.proc.is_alive():
            box = self.boxes[tp]
            try:
                os.rename(box.host_dir, attempt_dir)  # replaces the empty directory
                box.host_dir = attempt_dir
            except OSError as exc:  # not empty (files staged already): a sandbox of its own
                log.info("sandbox.spare_unused", error=str(exc))
                self.spares[network] = tp
                tp = None
        elif tp is not None:
            self._close(tp)
            tp = None
        if tp is None:
            tp = self._spawn_box(attempt_dir, network)
        self.busy.add(tp)
        asyncio.get_running_loop().call_soon(self._refill, network)
        box = self.boxes[tp]
        box.memory_mb = resources.cpu_mem or self.node_memory_mb
        memory = box.memory_mb * 1024 * 1024
        if box.group is not None:
            try:
                box.group.limit(memory, self.pids)
            except OSError as exc:  # v1 refuses a limit below what the group uses already
                self.release(tp)
                raise SandboxError(
                    f"the sandbox's memory cannot be limited to {box.memory_mb} MB (cpu_mem): "
                    f"{exc.strerror or exc}; its Python needs more than that to start"
                ) from exc
        else:
            box.extra["rlimits"] = {
                "RLIMIT_AS": memory,
                # counted per user over the whole machine: this user's processes now, and the room
                "RLIMIT_NPROC": self.pids + _user_processes(),
            }
        return tp

    def context(self, tp: TaskProcess, env: dict[str, str]) -> dict[str, Any]:
        """What the attempt's request carries for its sandbox."""
        return {"cwd": SANDBOX_DIR, "env": env, **self.boxes[tp].extra}

    def verdict(self, tp: TaskProcess) -> tuple[str, str] | None:
        """(error type, message) when the sandbox's limits ended or hindered the attempt."""
        box = self.boxes.get(tp)
        if box is None:
            return None
        if box.net is not None and box.net.error is not None:
            return ("sandbox_error", f"the sandbox's network could not be set up: {box.net.error}")
        if box.group is not None:
            if box.group.oom_kills():
                return (
                    "out_of_memory",
                    f"the attempt went over its memory limit of {box.memory_mb} MB (cpu_mem) and was killed",
                )
            refused = box.group.forks_refused()
            if refused:
                return (
                    "process_limit",
                    f"the sandbox refused {refused} new process(es) at its limit of {self.pids}",
                )
        stderr = self._stderr(tp)
        if stderr:
            return ("sandbox_error", f"the sandbox said: {stderr}")
        return None

    def _stderr(self, tp: TaskProcess) -> str:
        box = self.boxes[tp]
        pipe = tp.proc.popen.stderr if isinstance(tp.proc, PopenProcess) else None
        if pipe is not None and not box.stderr:
            with contextlib.suppress(OSError, ValueError):
                os.set_blocking(pipe.fileno(), False)
                box.stderr = pipe.read(4096) or b""
        return box.stderr.decode("utf-8", "replace").strip()

    # ---- ending -------------------------------------------------------------------------------
    async def end(self, tp: TaskProcess, timeout: float = END_TIMEOUT_S) -> None:
        """Kill the sandbox and wait until none of its processes is left (its cgroup empty, its
        PID namespace's first process gone: the kernel ends that one after all the others). Its
        files are read after this, never while a process of the task can still change them (a
        thread left running could swap a file for a link). Raises SandboxError if they outlive
        `timeout`."""
        box = self.boxes.get(tp)
        group = box.group if box is not None else None
        pid = tp.proc.pid
        try:
            tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)] if pid else []
        except psutil.Error:
            tree = []
        if group is not None:
            group.kill()
        kill_group(tp.proc)

        def wait_gone() -> bool:
            deadline = time.monotonic() + timeout
            tp.proc.join(timeout)
            _, alive = psutil.wait_procs(tree, timeout=max(0.0, deadline - time.monotonic()))
            if alive:
                return False
            while group is not None and not group.empty():
                if time.monotonic() > deadline:
                    return False
                group.kill()
                time.sleep(0.01)
            return True

        if not await asyncio.to_thread(wait_gone):
            raise SandboxError(f"the sandbox's processes were still there {timeout:g}s after it was killed")

    def kill(self, tp: TaskProcess) -> None:
        box = self.boxes.get(tp)
        if box is not None and box.group is not None:
            box.group.kill()
        kill_group(tp.proc)
        reap(tp.proc)

    def release(self, tp: TaskProcess, reuse: bool = False) -> None:
        """Every sandbox is used once: killed whole, its cgroup removed."""
        self.busy.discard(tp)
        self._close(tp)

    def _close(self, tp: TaskProcess, wait: bool = False) -> None:
        """Kill the sandbox; its process is waited for and its cgroup and spare directory removed
        off the event loop (`wait`: here, as the worker stops)."""
        box = self.boxes.pop(tp, None)
        with contextlib.suppress(OSError):
            tp.conn.close()
        if box is not None and box.group is not None:
            box.group.kill()
        kill_group(tp.proc)
        if isinstance(tp.proc, PopenProcess) and tp.proc.popen.stderr is not None:
            with contextlib.suppress(OSError):
                tp.proc.popen.stderr.close()
        group = box.group if box is not None else None
        net = box.net if box is not None else None
        spare_dir = (
            box.host_dir if box is not None and box.spare and box.host_dir.parent == self.spare_root else None
        )

        def wait_and_clean() -> None:
            tp.proc.join(5)
            if net is not None:
                net.close()
            if group is not None:
                for _ in range(50):  # the kernel frees a group once its last process is gone
                    group.remove()
                    if not any(d.exists() for d in group.dirs.values()):
                        break
                    group.kill()
                    tp.proc.join(0.1)
            if spare_dir is not None:
                shutil.rmtree(spare_dir, ignore_errors=True)

        if wait:
            wait_and_clean()
            return
        try:
            asyncio.get_running_loop().run_in_executor(None, wait_and_clean)
        except RuntimeError:
            wait_and_clean()

    def shutdown(self) -> None:
        for tp in [*self.spares.values(), *self.busy]:
            self._close(tp, wait=True)
        self.spares.clear()
        self.busy.clear()
        if self.support.cgroups is not None:
            self.support.cgroups.close()


def _user_processes() -> int:
    uid = os.getuid()
    count = 0
    for proc in psutil.process_iter(["uids"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if proc.info["uids"].real == uid:
                count += 1
    return count


def probe(label: str, work_root: Path, hidden: list[Path], enabled: bool = True) -> Support:
    """Whether sandboxes run here: bubblewrap found, and a sandbox as attempts get it (the same
    command line) starts Maze's task process. Run once at the worker's start."""
    if not enabled:
        return Support(False, "sandboxing turned off on this worker (--no-sandbox)")
    bwrap = find_bwrap()
    if bwrap is None:
        return Support(False, "bubblewrap (bwrap) is not installed on this worker")
    probe_dir = work_root / ".sandbox-probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_dir.mkdir(parents=True, exist_ok=True)
    try:
        # the interpreter starts, and Maze's code is there to import (not under a hidden path);
        # without importing it: a probe at every worker start must cost milliseconds
        code = Path(__file__).resolve().parent.parent
        command = [sys.executable, "-S", "-P", "-c", _SEES_CODE, str(code)]
        argv = bwrap_argv(bwrap, str(probe_dir), hidden, False, command)
        try:
            done = subprocess.run(
                argv,
                env=sandbox_env(os.environ, sys.path),
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Support(False, f"bubblewrap did not run: {exc}")
        if done.returncode == 3:
            return Support(False, f"Maze's code ({code}) is not visible inside a sandbox (a hidden path?)")
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            return Support(False, f"bubblewrap failed: {said[-1] if said else f'exit {done.returncode}'}")
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    cgroups = probe_cgroups(label)
    if cgroups is not None:
        cgroups.sweep()  # left by an earlier run of this worker that was killed
    kind = cgroups.kind if cgroups else "rlimit"
    return Support(True, kind, bwrap=bwrap, cgroups=cgroups, slirp=find_slirp())
