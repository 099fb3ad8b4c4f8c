"""A worker node: pulls the attempts placed on it, starts each when it fits what is running now,
runs it in its own OS process, and records start and outcome as events.

Work messages are acknowledged on receipt: they are transport, and the run stream is the record.
If this process dies, its next session (or the heartbeat expiry) makes the controller mark the
attempts it held as `node_lost` and retry them, so nothing is lost and nothing runs twice.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import OrderedDict

import structlog
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from maze.core.clock import now_ms
from maze.core.resources import Usage, add_usage, fits_assigned
from maze.events import subjects
from maze.events.codec import decode_work
from maze.events.nodes import NodeJoined, NodeLeft
from maze.events.specs import NodeCapacity, TaskError
from maze.events.store import EventStore
from maze.events.tasks import AttemptFailed, AttemptStarted, AttemptSucceeded
from maze.events.work import WorkItem
from maze.workers.outbox import Outbox
from maze.workers.pool import ProcessExited, ProcessPool, TaskProcess

log = structlog.get_logger(__name__)


class Worker:
    def __init__(
        self, nc: NATS, node_id: str, capacity: NodeCapacity, ip: str, hostname: str | None = None
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10)
        self.store = EventStore(nc)
        self.node_id = node_id
        self.capacity = capacity
        self.ip = ip
        self.hostname = hostname or socket.gethostname()
        self.session = uuid.uuid4().hex[:12]
        self.outbox = Outbox(self.store)
        self.pool = ProcessPool(warm=max(1, int(capacity.cpus)), max_idle=max(2, int(capacity.cpus) * 2))
        self.waiting: list[WorkItem] = []
        self.usage = Usage()
        self.running: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        self.seen: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.log = log.bind(node_id=node_id, session=self.session)

    @property
    def durable(self) -> str:
        return f"worker-{self.node_id}"

    async def start(self) -> None:
        subject = subjects.work_subject(self.node_id)
        # Work placed on an earlier session of this node is void: the controller re-places it.
        await self.js.purge_stream(subjects.WORK_STREAM, subject=subject)
        await self.js.add_consumer(
            subjects.WORK_STREAM,
            ConsumerConfig(
                durable_name=self.durable,
                filter_subject=subject,
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=100_000,
            ),
        )
        self.sub = await self.js.pull_subscribe_bind(self.durable, stream=subjects.WORK_STREAM)
        self.pool.start()
        self.outbox.start()
        await self.store.publish(
            subjects.node_subject(self.node_id),
            [
                NodeJoined(
                    node_id=self.node_id,
                    session=self.session,
                    at_ms=now_ms(),
                    hostname=self.hostname,
                    ip=self.ip,
                    capacity=self.capacity,
                )
            ],
        )
        self._tasks.append(asyncio.create_task(self._pull_forever(), name=f"worker-{self.node_id}"))
        self.log.info(
            "worker.joined",
            cpus=self.capacity.cpus,
            memory_mb=self.capacity.memory_mb,
            gpus=[(g.index, g.name, g.total_mem_mb) for g in self.capacity.gpus],
        )

    async def stop(self, reason: str = "stopped") -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self.running.values(), return_exceptions=True)
        self.pool.shutdown()
        try:
            await asyncio.wait_for(self.outbox.drain(), 5)
            await self.store.publish(
                subjects.node_subject(self.node_id),
                [NodeLeft(node_id=self.node_id, session=self.session, at_ms=now_ms(), reason=reason)],
            )
        except Exception as exc:
            self.log.warning("worker.leave_not_recorded", error=str(exc))
        await self.outbox.stop()

    # ---- receiving ----------------------------------------------------------------------------
    async def _pull_forever(self) -> None:
        while True:
            try:
                msgs = await self.sub.fetch(1, timeout=5)
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("worker.fetch_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            try:
                msgs += await self.sub.fetch(255, timeout=0.01)
            except TimeoutError:
                pass
            for msg in msgs:
                await msg.ack()
                for item in decode_work(msg.data).items:
                    self._accept(item)
            self._pump()

    def _accept(self, item: WorkItem) -> None:
        if item.session != self.session:
            return  # placed on an earlier session of this node; already re-placed
        if item.key in self.seen:
            return  # a re-sent work message (controller restart inside the dedupe window)
        self.seen[item.key] = None
        if len(self.seen) > 100_000:
            self.seen.popitem(last=False)
        self.waiting.append(item)

    # ---- running ------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Start every waiting attempt that fits what is running now (not only the first)."""
        still_waiting = []
        for item in self.waiting:
            if fits_assigned(self.capacity, self.usage, item.resources, item.gpus):
                add_usage(self.usage, item.resources, item.gpus)
                self.running[item.key] = asyncio.create_task(self._run(item))
            else:
                still_waiting.append(item)
        self.waiting = still_waiting

    async def _run(self, item: WorkItem) -> None:
        tp: TaskProcess | None = None
        reuse = False
        try:
            tp = self.pool.acquire(fresh=bool(item.gpus))
            self.outbox.emit(
                AttemptStarted(
                    run_id=item.run_id,
                    task_id=item.task_id,
                    attempt=item.attempt,
                    node_id=self.node_id,
                    at_ms=now_ms(),
                    node_ip=self.ip,
                    pid=tp.pid,
                )
            )
            request = {
                "func_name": item.func_name,
                "func_hash": item.func_hash,
                "func": item.func,
                "call_style": item.call_style,
                "inputs": item.inputs,
                "outputs": item.outputs,
                "gpus": item.gpus,
            }
            try:
                reply = await self.pool.run(tp, request, item.timeout_seconds)
            except TimeoutError:
                self._fail(
                    item, "timed_out", f"attempt exceeded timeout of {item.timeout_seconds}s", retryable=True
                )
                return
            except ProcessExited as exc:
                self._fail(item, "process_exited", str(exc), retryable=True)
                return
            reuse = not item.gpus
            if reply["ok"]:
                self.outbox.emit(
                    AttemptSucceeded(
                        run_id=item.run_id,
                        task_id=item.task_id,
                        attempt=item.attempt,
                        node_id=self.node_id,
                        at_ms=now_ms(),
                        result=reply["payload"],
                        duration_ms=reply["duration_ms"],
                    )
                )
            else:
                err = reply["payload"]
                self._fail(
                    item,
                    err["error_type"],
                    err["message"],
                    retryable=err["retryable"],
                    traceback=err["traceback"],
                    exception_type=err["exception_type"],
                )
        except asyncio.CancelledError:
            reuse = False
            raise
        finally:
            if tp is not None:
                self.pool.release(tp, reuse=reuse)
            add_usage(self.usage, item.resources, item.gpus, sign=-1)
            self.running.pop(item.key, None)
            self._pump()

    def _fail(
        self,
        item: WorkItem,
        error_type: str,
        message: str,
        retryable: bool,
        traceback: str | None = None,
        exception_type: str | None = None,
    ) -> None:
        self.outbox.emit(
            AttemptFailed(
                run_id=item.run_id,
                task_id=item.task_id,
                attempt=item.attempt,
                at_ms=now_ms(),
                node_id=self.node_id,
                error=TaskError(
                    error_type=error_type,
                    message=message,
                    retryable=retryable,
                    origin="task",
                    node_id=self.node_id,
                    node_ip=self.ip,
                    attempt=item.attempt,
                    traceback=traceback,
                    exception_type=exception_type,
                ),
            )
        )
