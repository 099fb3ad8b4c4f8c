"""Child processes that die with their parent (Linux PR_SET_PDEATHSIG), so a kill -9 of the
head or a worker leaves nothing running behind it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def reap_orphans() -> None:
    """Make this process a child subreaper (Linux): what its descendants leave behind when their
    parent exits (a double-forked daemon, say) is re-parented to it rather than to init, so that
    it can still be found, and killed, as its descendant. No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        return


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits. No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return


def die_with(parent_pid: int | None) -> None:
    """`die_with_parent`, for a child told its parent's pid: a parent that died before the request
    took effect left it orphaned already (it would hold the parent's files for ever), so it exits."""
    die_with_parent()
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def _children_of_self() -> list[int]:
    """This process's children, from /proc/self/task/*/children (every thread's), or psutil where
    the kernel does not offer those files."""
    tasks = "/proc/self/task"
    try:
        tids = os.listdir(tasks)
    except OSError:
        tids = []
    pids: list[int] = []
    found = False
    for tid in tids:
        try:
            with open(f"{tasks}/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
            found = True
        except OSError:
            continue
    if found:
        return pids
    import psutil

    return [p.pid for p in psutil.Process().children()]


# waitpid's flags for any child: __WALL on Linux, so that a child made by clone() with an exit signal
# other than SIGCHLD counts too (a plain waitpid passes over it, as if there were none)
_ANY_CHILD = os.WNOHANG | (0x40000000 if sys.platform.startswith("linux") else 0)


def end_leftovers() -> int:
    """Kill what an attempt left running under this process (a task process is the subreaper of
    its tasks' descendants, so every one of them is a child of it, or below one), and reap what has
    exited: an attempt that returned must leave nothing running that no reservation counts. How
    many processes were killed."""
    try:  # one call tells the usual case, an attempt that started no process: no child at all
        os.waitpid(-1, _ANY_CHILD)  # (one that has exited is reaped here, the rest below)
    except ChildProcessError:
        return 0
    import psutil

    killed = 0
    for pid in _children_of_self():
        try:
            child = psutil.Process(pid)
            tree = [*child.children(recursive=True), child]
        except psutil.Error:
            continue
        # stopped first, all of them, then killed: a parent seeing its child die first could still
        # run a step (a shell's next command) before its own kill lands
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.suspend()
        for proc in tree:
            try:
                proc.kill()
                killed += 1
            except psutil.Error:
                pass
    deadline = time.monotonic() + 1.0
    while True:  # reaped, leftovers and what had exited already, so no zombie stays
        try:
            pid, _ = os.waitpid(-1, _ANY_CHILD)
        except ChildProcessError:  # no child left at all
            break
        if pid:
            continue
        if not killed or time.monotonic() > deadline:  # none killed is still dying
            break
        time.sleep(0.002)
    return killed
