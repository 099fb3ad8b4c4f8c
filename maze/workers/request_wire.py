"""How an attempt goes to its task process: one message on their socket, framed as
multiprocessing's `Connection.send_bytes` frames it (a 4-byte big-endian length, or -1 and an
8-byte one), with the attempt's output pipes (maze/workers/capture.py) attached to its first byte
(SCM_RIGHTS). One write wakes the task process once: sent apart, the pipes cost a second write
and a second wake-up (in a no-op fan-out the two sends showed as ~13% of the head's samples, much
of it the task process being woken; the fan-out's throughput did not move beyond its noise)."""

from __future__ import annotations

import array
import os
import socket
import struct
from collections.abc import Sequence

_LONG = 0x7FFFFFFF


class FdsLost(RuntimeError):
    """The fds sent with a request did not arrive (this process is out of file descriptors: the
    kernel drops what does not fit)."""


def send_request(fd: int, payload: bytes, fds: Sequence[int] = ()) -> None:
    """Write one request on the socket `fd`, `fds` passed with it. Blocking, whatever the fd was
    (uvloop makes a watched fd non-blocking, and a message larger than the socket's buffer would
    then fail half-written): the task process is waiting to read it, and runs no task code before
    it has."""
    n = len(payload)
    header = struct.pack("!i", n) if n <= _LONG else struct.pack("!iQ", -1, n)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fd)  # borrowed: detached below
    try:
        sock.settimeout(None)  # blocking, whatever default timeout a library set for new sockets
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = sock.sendmsg([header, payload], ancillary)
        if sent < len(header) + n:  # a signal cut it short: the rest as it is (the fds went with byte one)
            if sent < len(header):
                sock.sendall(header[sent:])
            sock.sendall(memoryview(payload)[max(0, sent - len(header)) :])
    finally:
        sock.detach()


def recv_request(sock: socket.socket, max_fds: int = 2) -> tuple[bytearray, list[int]]:
    """Read one request and the fds that came with it. Raises EOFError once the worker is gone,
    FdsLost when fds were sent that could not be received (none of them is kept open)."""
    head, fds, flags, _ = socket.recv_fds(sock, 4, max_fds)
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise FdsLost(
            "the pipes sent with an attempt did not arrive: this process is out of file descriptors"
        )
    if not head:
        raise EOFError
    if len(head) < 4:
        head += _exactly(sock, 4 - len(head))
    (n,) = struct.unpack("!i", head)
    if n == -1:
        (n,) = struct.unpack("!Q", _exactly(sock, 8))
    return _exactly(sock, n), fds


def _exactly(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise EOFError
        got += k
    return buf
