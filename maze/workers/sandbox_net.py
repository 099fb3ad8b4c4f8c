"""Outbound networking for sandboxes whose task may use the network (`network=True`), without the
host's loopback: the sandbox has a network namespace of its own all the same, and slirp4netns
(user-mode TCP/IP, Debian's `slirp4netns` package) connects it to the outside through the
worker's host, with `--disable-host-loopback`: nothing listening on the host's 127.0.0.1 (a
head's API, which asks no token there; its NATS) can be reached from inside, nor abstract unix
sockets (they belong to a network namespace).

bubblewrap makes the namespaces and waits (`--block-fd`) before it starts the task's process;
it says the namespaces' process on `--info-fd`; slirp4netns attaches to that process's network
namespace and says when the network is configured (`--ready-fd`); only then is bubblewrap let go.
slirp4netns is started only once bubblewrap has given the namespace's loopback its address:
slirp4netns brings `lo` up, which gives it 127.0.0.1 at once, and bubblewrap's own address
request (NLM_F_EXCL) then fails and the sandbox dies ("loopback: Failed RTM_NEWADDR"); on a busy
machine one start in five lost that race.
That happens in a thread of the worker's (never on its event loop) while the attempt's request is
sent: the request waits in the socket until the task's process reads it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

SETUP_TIMEOUT_S = 10.0
SLIRP_DNS = "10.0.2.3"  # slirp4netns's DNS forwarder, inside the sandbox


def find_slirp() -> str | None:
    return shutil.which("slirp4netns")


def loopback_resolver(resolv_conf: str) -> bool:
    """Whether a resolv.conf names a nameserver on loopback (systemd-resolved's 127.0.0.53, say),
    which a sandbox with its own network cannot reach."""
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(fields[1].split("%")[0]).is_loopback:
                    return True
    return False


def sandbox_resolv_conf(work_root: Path) -> Path | None:
    """A resolv.conf naming slirp4netns's DNS forwarder, to bind over /etc/resolv.conf where the
    host's own names a loopback resolver; None where the host's serves as it is."""
    try:
        host = Path("/etc/resolv.conf").read_text()
    except OSError:
        return None
    if not loopback_resolver(host):
        return None
    path = work_root / ".sandbox-resolv.conf"
    path.write_text(f"nameserver {SLIRP_DNS}\n")
    return path


def _read_until(fd: int, deadline: float, done: object) -> bytes:
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("bubblewrap did not say its namespaces in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk
        if callable(done) and done(data):
            return data


def _wait_loopback(pid: int, deadline: float) -> None:
    """Until the network namespace of `pid` has 127.0.0.1 (bubblewrap's loopback set-up is done):
    its routing tables, read from the host, list the address once it is there."""
    fib = f"/proc/{pid}/net/fib_trie"
    while True:
        with open(fib) as f:  # OSError: the process is gone (bubblewrap failed)
            if "127.0.0.1" in f.read():
                return
        if time.monotonic() > deadline:
            raise TimeoutError("bubblewrap did not set up the sandbox's loopback in time")
        time.sleep(0.0002)


def _whole_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class SandboxNet:
    """One sandbox's network: the pipes bubblewrap gets, and the slirp4netns attached to it."""

    def __init__(self, slirp: str) -> None:
        self.slirp = slirp
        self.info_r, self.info_w = os.pipe()
        self.block_r, self.block_w = os.pipe()
        self.exit_r, self.exit_w = os.pipe()  # slirp4netns ends when exit_w closes (the worker died)
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self.closed = False
        self.lock = threading.Lock()

    def bwrap_args(self, resolv: Path | None) -> list[str]:
        argv = ["--info-fd", str(self.info_w), "--block-fd", str(self.block_r)]
        if resolv is not None:
            argv += ["--ro-bind", str(resolv), "/etc/resolv.conf"]
        return argv

    @property
    def child_fds(self) -> tuple[int, int]:
        return self.info_w, self.block_r

    def spawned(self, bwrap: subprocess.Popen[bytes]) -> None:
        """bubblewrap started with our fds: its ends are closed here, the network set up in a thread."""
        for fd in (self.info_w, self.block_r):
            os.close(fd)
        threading.Thread(target=self._connect, args=(bwrap,), name="sandbox-net", daemon=True).start()

    def _connect(self, bwrap: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        ready_r, ready_w = os.pipe()
        try:
            info = json.loads(_read_until(self.info_r, deadline, _whole_json) or b"{}")
            pid = int(info["child-pid"])
            _wait_loopback(pid, deadline)
            argv = [self.slirp, "--configure", "--mtu=65520", "--disable-host-loopback"]
            argv += ["--ready-fd", str(ready_w), "--exit-fd", str(self.exit_r), str(pid), "tap0"]
            with self.lock:
                if self.closed:
                    return
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    pass_fds=(ready_w, self.exit_r),
                    start_new_session=True,
                    close_fds=True,
                )
            os.close(ready_w)
            ready_w = -1
            if _read_until(ready_r, deadline, lambda d: bool(d)) != b"1":
                said = self._slirp_said()
                raise OSError(f"slirp4netns did not configure the network{': ' + said if said else ''}")
            os.write(self.block_w, b"1")  # bubblewrap starts the task's process now
        except (OSError, ValueError, KeyError, TimeoutError) as exc:
            self.error = str(exc) or type(exc).__name__
            with contextlib.suppress(OSError):
                bwrap.kill()  # the attempt ends; the worker's verdict says why
        finally:
            for fd in (ready_r, ready_w, self.info_r, self.block_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _slirp_said(self) -> str:
        """slirp4netns's last line on stderr, if it ended."""
        proc = self.proc
        if proc is None or proc.stderr is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1)
        if proc.poll() is None:
            return ""
        lines = proc.stderr.read(4096).decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit {proc.returncode}"

    def abandon(self) -> None:
        """bubblewrap did not start: every pipe closed."""
        for fd in (self.info_r, self.info_w, self.block_r, self.block_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.close()

    def close(self) -> None:
        """slirp4netns ends (as the sandbox is killed; waits a bounded time for it). Once."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            proc = self.proc
        for fd in (self.exit_w, self.exit_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.stderr is not None:
                with contextlib.suppress(OSError):
                    proc.stderr.close()
