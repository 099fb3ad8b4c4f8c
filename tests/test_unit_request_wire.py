"""An attempt's request and its output pipes in one message (maze/workers/request_wire.py), and
the end of what an attempt left running (maze/core/procs.py end_leftovers)."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from maze.workers import request_wire
from maze.workers.request_wire import FdsLost, recv_request, send_request


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_request_and_its_pipes_arrive_together_and_the_pipes_work() -> None:
    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    try:
        send_request(ours.fileno(), b"attempt-1", [write_end, write_end])
        data, fds = recv_request(theirs)
        assert bytes(data) == b"attempt-1" and len(fds) == 2
        os.write(fds[0], b"printed\n")
        assert os.read(read_end, 100) == b"printed\n"
        for fd in fds:
            os.close(fd)
        send_request(ours.fileno(), b"")  # none sent: none received
        assert recv_request(theirs) == (bytearray(), [])
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        ours.close()
        theirs.close()


def test_a_request_larger_than_the_socket_cut_short_by_signals_arrives_whole() -> None:
    """A blocking sendmsg interrupted by a signal returns what it sent: the rest follows."""
    ours, theirs = socket.socketpair()
    payload = os.urandom(24 << 20)
    got: list[tuple[bytearray, list[int]]] = []
    reader = threading.Thread(target=lambda: got.append(recv_request(theirs)))
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        reader.start()
        send_request(ours.fileno(), payload, [ours.fileno()])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    reader.join(30)
    ((data, fds),) = got
    assert bytes(data) == payload and len(fds) == 1
    os.close(fds[0])
    ours.close()
    theirs.close()


def test_the_long_header_form_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_wire, "_LONG", 10)  # as if the payload were past 2 GiB
    ours, theirs = socket.socketpair()
    send_request(ours.fileno(), b"x" * 100)
    assert recv_request(theirs) == (bytearray(b"x" * 100), [])
    ours.close()
    with pytest.raises(EOFError):
        recv_request(theirs)
    theirs.close()


def test_pipes_that_do_not_fit_are_an_error_and_none_is_left_open() -> None:
    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    before = _open_fds()
    send_request(ours.fileno(), b"attempt", [read_end, write_end])
    with pytest.raises(FdsLost):
        recv_request(theirs, max_fds=1)
    assert _open_fds() == before
    for fd in (read_end, write_end):
        os.close(fd)
    ours.close()
    theirs.close()


LEFTOVERS = textwrap.dedent(
    """
    import ctypes, os, platform, subprocess, sys, time
    from maze.core import procs
    procs.reap_orphans()  # a subreaper, as a task process is
    print(procs.end_leftovers())  # nothing started: nothing to end
    sleeper = subprocess.Popen(["sleep", "30"])
    print(procs.end_leftovers(), sleeper.poll() is not None or os.path.exists(f"/proc/{sleeper.pid}") is False)
    if platform.machine() in ("x86_64", "aarch64"):  # a child whose exit signal is not SIGCHLD
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        nr = 56 if platform.machine() == "x86_64" else 220
        pid = libc.syscall(nr, ctypes.c_ulong(0), ctypes.c_ulong(0), None, None, ctypes.c_ulong(0))
        if pid == 0:
            os.execv("/bin/sleep", ["sleep", "30"])
        print(procs.end_leftovers(), os.path.exists(f"/proc/{pid}"))
    """
)


def test_end_leftovers_ends_every_child_and_answers_at_once_without_one() -> None:
    out = subprocess.run(
        [sys.executable, "-c", LEFTOVERS], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\n")
    assert out[0] == "0"
    assert out[1] == "1 True", "the sleeping child was killed and reaped"
    if platform.machine() in ("x86_64", "aarch64"):
        assert out[2] == "1 False", "a child made by clone() with no exit signal is found and reaped too"
