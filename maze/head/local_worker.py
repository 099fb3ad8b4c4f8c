"""Supervising the head's local worker (maze/workers/local.py): started with the head, waited for
until the controller has folded its join, restarted (with a new session) if it exits while the
head runs, stopped with the head."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid

import structlog

from maze.core.errors import Unavailable
from maze.core.settings import Settings
from maze.head.controller import RunController
from maze.workers.local import NATS_ENV, PARENT_ENV

log = structlog.get_logger(__name__)
JOIN_TIMEOUT_S = 60.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_S = 60.0


class LocalWorkerProcess:
    def __init__(self, settings: Settings, urls: list[str], controller: RunController) -> None:
        self.settings = settings
        self.urls = urls
        self.controller = controller
        self.node_id = settings.node_id or f"{socket.gethostname().split('.')[0]}-head"
        self.proc: asyncio.subprocess.Process | None = None
        self.session = ""
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start it and wait until its session is a node of the controller's."""
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name="local-worker-supervisor")

    async def _spawn(self) -> None:
        s = self.settings
        self.session = uuid.uuid4().hex[:12]
        args = ["--node-id", self.node_id, "--session", self.session]
        args += ["--heartbeat-interval", str(s.heartbeat_interval), "--log-level", s.log_level]
        args += [
            "--inline-bytes",
            str(s.limits.inline_bytes),
            "--blob-max-bytes",
            str(s.limits.blob_max_bytes),
        ]
        for flag, value in (
            ("--cpus", s.worker_cpus),
            ("--memory-mb", s.worker_memory_mb),
            ("--gpus", s.worker_gpus),
        ):
            if value is not None:
                args += [flag, str(value)]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "maze.workers.local",
            *args,
            env={**os.environ, NATS_ENV: ",".join(self.urls), PARENT_ENV: str(os.getpid())},
        )
        deadline = asyncio.get_running_loop().time() + JOIN_TIMEOUT_S
        while not self._joined():
            if self.proc.returncode is not None:
                raise Unavailable(
                    f"the head's local worker exited with code {self.proc.returncode} before it joined "
                    "(its error is in the log above)"
                )
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable(f"the head's local worker did not join within {JOIN_TIMEOUT_S:g} s")
            await asyncio.sleep(0.01)

    def _joined(self) -> bool:
        node = self.controller.placer.nodes.get(self.node_id)
        return node is not None and node.session == self.session and node.alive

    async def _supervise(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            assert self.proc is not None
            began = loop.time()
            code = await self.proc.wait()
            if self._stopping:
                return
            if loop.time() - began > STABLE_S:
                failures = 0  # it had run fine for a while: this exit starts a new count
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            failures += 1
            log.error("head.local_worker_exited_restarting", code=code, restarts=failures, in_s=delay)
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except Exception as exc:  # tried again after the next backoff
                log.error("head.local_worker_restart_failed", error=str(exc))

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()  # it leaves (node.left) and stops its task processes
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            log.warning("head.local_worker_kill_after_timeout")
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
