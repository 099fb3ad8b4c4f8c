"""Which head's run controller decides: a lease in a JetStream KV bucket (`maze-leader`).

Several heads may run against one NATS; each folds the whole log (a hot standby), but only the
holder of the lease decides. The lease is one key, `controller`, whose value names the holder and
its *epoch*; every change is revision-checked (`create` when the key is absent, `update` with the
revision last read), so two heads can never both take it.

- The holder renews it every LEASE_S / 3 (a revision-checked update). A renewal that finds another
  revision means another head took it: the holder is deposed at once. A holder that cannot renew
  for LEASE_S (NATS unreachable) steps down by itself, since another head may have taken over.
- A standby reads the key every LEASE_S / 3. A revision that has not moved for LEASE_S (judged on
  this head's own monotonic clock: no clocks are compared across machines) is a dead holder: the
  standby takes the lease with the next epoch. So a dead leader is replaced within about
  LEASE_S + LEASE_S / 3, under the two lease periods the design asks for.
- A head takes the lease only once its controller has folded the log up to where it stood at
  start (`ready`), and always with an epoch above every one it knows of (`floor`: the latest it
  folded, and the latest `leader.elected` in the log): epochs only grow, even if the bucket was
  lost or recreated. A holder that finds an epoch above its own elected in the log takes its
  lease again above it, so that one head decides again.
- The holder decides only while its last renewal is younger than LEASE_S (`fresh`, judged from
  when that renewal was sent): a head whose NATS stalls stops deciding before a standby may
  take over.
- The new holder records `leader.elected(epoch)` in the runs stream (maze/head/controller.py) and
  decides only once it has folded it. Every decision carries its epoch, and every fold refuses a
  decision of an older epoch found after that record: a deposed leader's late writes change
  nothing (maze/events/catalog.py `fenced`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from msgspec import Struct
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from maze.events import subjects
from maze.events.store import describe_error

log = structlog.get_logger(__name__)
KEY = "controller"


class Holder(Struct, frozen=True):
    head_id: str
    epoch: int
    at_ms: int = 0  # when it was written (for people: decisions never compare clocks)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Holder).decode


class Lease:
    def __init__(
        self,
        js: JetStreamContext,
        head_id: str,
        lease_s: float,
        on_change: Callable[[bool, int], None],
        floor: Callable[[], Awaitable[int]] | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.js = js
        self.head_id = head_id
        self.lease_s = lease_s
        self.on_change = on_change  # (leading, epoch) whenever this head's leadership changes
        self.floor = floor or _no_floor  # the latest epoch known: a new one is always above it
        self.ready = ready  # whether this head may take the lease yet (its controller is live)
        self.leading = False
        self.epoch = 0
        self.holder: Holder | None = None  # the latest holder seen
        self._revision = 0  # of the value last read or written
        self._seen_since = time.monotonic()  # when that revision was first seen
        self._renewed_at = 0.0
        self._woken = asyncio.Event()

    async def run(self) -> None:
        kv = await self._bucket()
        while True:
            try:
                await self._step(kv)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS unreachable, a leader election: judged again soon
                log.warning("lease.unavailable", error=describe_error(exc))
                if self.leading and time.monotonic() - self._renewed_at > self.lease_s:
                    self._set(False, self.epoch, "could not renew within the lease")
            try:
                await asyncio.wait_for(self._woken.wait(), self.lease_s / 3)
            except TimeoutError:
                pass
            self._woken.clear()

    def wake(self) -> None:
        """Look at the lease now (the controller went live: it may take the lease at once)."""
        self._woken.set()

    async def _bucket(self) -> KeyValue:
        return await self.js.key_value(subjects.LEADER_BUCKET)

    async def _step(self, kv: KeyValue) -> None:
        now = time.monotonic()
        if self.leading:
            try:
                floor = await self.floor()
            except Exception as exc:  # the log cannot be asked now: renew as is, look again next time
                log.warning("lease.floor_unavailable", error=describe_error(exc))
                floor = self.epoch
            epoch = floor + 1 if floor > self.epoch else self.epoch
            try:
                self._revision = await kv.update(KEY, self._value(epoch), last=self._revision)
                self._renewed_at = now  # when the renewal was sent: `fresh` errs on the safe side
            except KeyWrongLastSequenceError:
                self._set(False, self.epoch, "another head took the lease")
                return
            if epoch != self.epoch:  # an epoch above its own was elected: above that one again
                self.holder = Holder(self.head_id, epoch)
                self._set(True, epoch, f"epoch {floor} was elected in the log: took the lease again")
            return
        if not self.ready():
            await self._watch(kv, now)  # a head still replaying the log follows, and takes nothing
            return
        try:
            entry = await kv.get(KEY)
        except KeyNotFoundError:
            await self._take(kv, 1, None)
            return
        revision = entry.revision or 0
        holder = _holder(entry.value)
        self.holder = holder
        if holder is not None and holder.head_id in (self.head_id, ""):
            # handed over by a leader that stopped (""), or this head's own from before it
            # restarted (a head id is its data dir's, which one process holds at a time): taken at
            # once, with the next epoch
            await self._take(kv, holder.epoch + 1, revision)
            return
        if revision != self._revision:
            self._revision, self._seen_since = revision, now
            return
        if now - self._seen_since >= self.lease_s:  # its holder stopped renewing it
            await self._take(kv, (holder.epoch if holder else 0) + 1, revision)

    async def _watch(self, kv: KeyValue, now: float) -> None:
        try:
            entry = await kv.get(KEY)
        except KeyNotFoundError:
            return
        self.holder = _holder(entry.value)
        if (entry.revision or 0) != self._revision:
            self._revision, self._seen_since = entry.revision or 0, now

    @property
    def fresh(self) -> bool:
        """Whether this head holds the lease and renewed it less than LEASE_S ago (it decides only
        then: past that, a standby may have judged it dead)."""
        return self.leading and time.monotonic() - self._renewed_at < self.lease_s

    async def _take(self, kv: KeyValue, epoch: int, revision: int | None) -> None:
        epoch = max(epoch, await self.floor() + 1)
        sent = time.monotonic()  # a taken lease is fresh from when it was asked for, not answered
        try:
            if revision is None:
                self._revision = await kv.create(KEY, self._value(epoch))
            else:
                self._revision = await kv.update(KEY, self._value(epoch), last=revision)
        except (KeyWrongLastSequenceError, Exception) as exc:
            if not _lost_race(exc):
                raise
            return  # another head took it first
        self._renewed_at = sent
        self.holder = Holder(self.head_id, epoch)
        self._set(True, epoch, "took the lease")

    async def release(self) -> None:
        """Hand the lease over (a head stopping cleanly): the next head takes it at once, with the
        next epoch, instead of waiting for it to lapse. The epoch stays: it only ever grows."""
        if not self.leading:
            return
        kv = await self._bucket()
        await kv.update(KEY, _encode(Holder(head_id="", epoch=self.epoch)), last=self._revision)
        self._set(False, self.epoch, "handed over")

    def _value(self, epoch: int) -> bytes:
        return _encode(Holder(head_id=self.head_id, epoch=epoch, at_ms=int(time.time() * 1000)))

    def _set(self, leading: bool, epoch: int, why: str) -> None:
        if leading == self.leading and epoch == self.epoch:
            return
        self.leading, self.epoch = leading, epoch
        log.warning("lease.changed", leading=leading, epoch=epoch, head_id=self.head_id, why=why)
        self.on_change(leading, epoch)

    def view(self) -> dict[str, object]:
        holder = self.holder
        return {
            "head_id": holder.head_id if holder else None,
            "epoch": holder.epoch if holder else 0,
            "holds_lease": self.leading,
            "fresh": self.fresh,
            "lease_s": self.lease_s,
        }


def _holder(value: bytes | None) -> Holder | None:
    """The lease's holder; None when the key holds nothing readable (then it is judged by its
    revision alone, as a holder that stopped renewing: taken once it has not moved for a lease)."""
    if not value:
        return None
    try:
        return _decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.error("lease.unreadable", size=len(value))
        return None


async def _no_floor() -> int:
    return 0


def _lost_race(exc: BaseException) -> bool:
    """A create of a key that exists, or an update at a revision that moved: another head won."""
    if isinstance(exc, KeyWrongLastSequenceError):
        return True
    text = str(exc).lower()
    return "wrong last sequence" in text or "key exists" in text
