"""Child processes that die with their parent (Linux PR_SET_PDEATHSIG), so a kill -9 of the
head or a worker leaves nothing running behind it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
