"""A continuous pull consumer: keeps one pull request outstanding on a durable consumer and hands
each message over the moment it arrives (what nats.go calls Consume).

nats-py's `fetch(n)` waits for all n messages or its timeout once the first one arrived, which put
~10 ms into every attempt's start; here the next request goes out when the current one is used up
or ends, and a watchdog re-issues it if the server goes quiet (e.g. after a reconnect). A quiet
server may also mean the consumer is gone (its stream was recreated, say): the watchdog then has it
made again (`ensure_consumer`) before asking, so a worker never waits for work in silence.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from maze.core.tasks import cancel_and_wait
from maze.events.store import api_prefix

log = structlog.get_logger(__name__)
STATUS = "Status"


class ContinuousPull:
    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        on_msg: Callable[[Msg], None],
        batch: int = 256,
        expires_s: float = 30.0,
        heartbeat_s: float = 5.0,
        ensure_consumer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.api_subject = f"{api_prefix(nc)}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.on_msg = on_msg
        self.batch = batch
        self.expires_s = expires_s
        self.heartbeat_s = heartbeat_s
        self.ensure_consumer = ensure_consumer
        self.left = 0  # messages the outstanding request may still deliver
        self.last_activity = time.monotonic()
        self.sub: Subscription | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._backoff_s = 0.0

    async def start(self) -> None:
        self.inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(self.inbox, cb=self._on_message)
        await self._request()
        self._watchdog = asyncio.create_task(self._watch(), name="pull-watchdog")

    async def stop(self) -> None:
        # cancelled until it takes (maze/core/tasks.py): a watchdog left running would keep asking
        # for this consumer's messages on an inbox nobody reads any more
        await cancel_and_wait([self._watchdog, self._recovering], timeout=10)
        if self.sub is not None:
            try:
                await self.sub.unsubscribe()
            except Exception:
                pass

    async def _request(self) -> None:
        self.left = self.batch
        self.last_activity = time.monotonic()
        body = {
            "batch": self.batch,
            "expires": int(self.expires_s * 1e9),
            "idle_heartbeat": int(self.heartbeat_s * 1e9),
        }
        await self.nc.publish(self.api_subject, json.dumps(body).encode(), reply=self.inbox)

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS) if msg.headers else None
        if status is not None:
            if status == "100":  # the server's idle heartbeat: the request is alive
                self.last_activity = time.monotonic()
                self._backoff_s = 0.0
            elif status in ("404", "408"):  # the request ended (expired): the next one
                self.last_activity = time.monotonic()
                await self._request()
            else:
                # 409 (the consumer was deleted or changed), 503 (nothing answers: no consumer):
                # not activity, and not asked again at once (that would spin): the consumer is
                # looked at, and made again where it is gone, after a backoff
                log.warning("pull.consumer_unavailable", subject=self.api_subject, status=status)
                self._recover_soon()
            return
        self.last_activity = time.monotonic()
        self._backoff_s = 0.0
        await msg.ack()  # acknowledged on receipt: the run stream, not this queue, is the record
        self.on_msg(msg)
        self.left -= 1
        if self.left <= 0:
            await self._request()

    def _recover_soon(self) -> None:
        if self._recovering is not None and not self._recovering.done():
            return
        self._backoff_s = min(self.heartbeat_s, max(0.25, self._backoff_s * 2))
        self._recovering = asyncio.get_running_loop().create_task(self._recover(self._backoff_s))

    async def _recover(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        try:
            if self.ensure_consumer is not None:
                await self.ensure_consumer()
            await self._request()
        except Exception as exc:  # the watchdog tries again
            log.warning("pull.recover_failed", error=str(exc))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if time.monotonic() - self.last_activity > 2 * self.heartbeat_s and self.nc.is_connected:
                log.info("pull.reissue_request", subject=self.api_subject)
                try:
                    if self.ensure_consumer is not None:
                        await self.ensure_consumer()
                    await self._request()
                except Exception as exc:
                    log.warning("pull.request_failed", error=str(exc))
