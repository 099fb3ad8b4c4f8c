"""The event store: connection, stream set-up and publishing with deterministic message ids."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from maze.core.errors import PayloadTooLarge, StoreFull, Unavailable
from maze.core.settings import redact
from maze.core.tls import client_context, needs_tls
from maze.events import headers, subjects
from maze.events.catalog import Event, event_key, event_tag
from maze.events.codec import encode_events

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_S = 120.0
# The work stream is transport, not the record: the run controller sends again, from the log, the
# work of every attempt placed and not started (maze/head/delivery.py). So its limits may drop
# work: a message older than an hour, or beyond 256 MiB or 1,000,000 messages, is discarded (oldest
# first) rather than refusing new work. For the same reason it is kept in memory: a work message
# costs no fsync on the task's path, and what a NATS restart drops is sent again from the log. 256 MiB
# of it at most (work carries code by hash and big values as blob references).
WORK_MAX_AGE_S = 3600.0
WORK_MAX_BYTES = 256 * 1024**2
WORK_MAX_MSGS = 1_000_000
# stale heartbeat keys vanish; liveness itself is judged by the controller. At least 3x the
# longest heartbeat interval a worker may declare (MAX_HEARTBEAT_INTERVAL_S, maze/core/settings.py)
HEARTBEAT_TTL_S = 120.0
# What tasks print (maze/events/logs.py) is kept apart from the lifecycle log, within limits: the
# oldest lines go first past 4 GiB or a week (settings `logs_max_mb`, `logs_max_age_h`).
LOGS_MAX_BYTES = 4 * 1024**3
LOGS_MAX_AGE_S = 7 * 24 * 3600.0
LOGS_MIN_BYTES = 64 * 1024**2
_INSUFFICIENT_STORAGE = 10047  # JetStream's err_code: a stream's max_bytes does not fit the store
# Room left in every message for headers and the envelope: no publish may reach `max_payload`.
HEADROOM_BYTES = 16 * 1024
_encoder = msgspec.msgpack.Encoder()


MIN_MAX_PAYLOAD = 128 * 1024


def payload_budget(nc: NATS) -> int:
    """The most bytes of payload one message may carry on this server (its `max_payload`, which is
    1 MB on a default nats-server, less room for headers). A server that allows less than 128 KB
    per message is refused: a task's spec or error must fit one event."""
    max_payload = int(nc.max_payload)
    if max_payload < MIN_MAX_PAYLOAD:
        raise Unavailable(
            f"the NATS server allows {max_payload} bytes per message (max_payload); Maze needs at "
            f"least {MIN_MAX_PAYLOAD} (the default is 1 MB)",
            max_payload=max_payload,
        )
    return max_payload - HEADROOM_BYTES


def pack_by_bytes(sizes: Sequence[int], budget: int, overhead: int = 8) -> list[range]:
    """Split items with the given encoded sizes into consecutive runs whose total stays within
    `budget`. An item larger than the budget on its own raises PayloadTooLarge."""
    out: list[range] = []
    start = total = 0
    for i, size in enumerate(sizes):
        if size + overhead > budget:
            raise PayloadTooLarge(
                f"one item is {size} bytes encoded, above the message limit of {budget} bytes",
                size=size,
                limit=budget,
            )
        if i > start and total + size + overhead > budget:
            out.append(range(start, i))
            start, total = i, 0
        total += size + overhead
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


# What no retry can fix: the server says this process's credentials are wrong.
_REFUSED = ("authorization violation", "authentication", "user authentication expired")


DEFAULT_API_PREFIX = "$JS.API"


def api_prefix(nc: NATS) -> str:
    """The JetStream API subjects this connection asks on: `$JS.API`, or for a worker of the
    embedded server (an account of its own that imports only what it may use of the head's:
    maze/head/nats_auth.py) the prefix its imports are mapped to."""
    return str(getattr(nc, "_maze_api_prefix", DEFAULT_API_PREFIX))


def jetstream(nc: NATS, timeout: float = 10.0) -> JetStreamContext:
    """This connection's JetStream context, on its API prefix."""
    return nc.jetstream(timeout=timeout, prefix=api_prefix(nc))


async def connect(urls: Sequence[str], name: str, js_api_prefix: str | None = None, **kwargs: object) -> NATS:
    """Connect, waiting (and saying so every few seconds) while no server answers: a cluster that is
    starting heals by itself. Credentials a server refuses end it at once with one clear error, not
    a reconnect loop (a second head whose embedded server could not bind met the first head's
    server this way). `js_api_prefix`: where this connection's JetStream API is (`api_prefix`)."""
    where = ", ".join(redact(u) for u in urls)
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    said = 0.0

    async def on_error(exc: Exception) -> None:
        nonlocal said
        text = str(exc)
        if any(word in text.lower() for word in _REFUSED) or isinstance(exc, nats.errors.AuthorizationError):
            if not refused.done():
                refused.set_result(text)
            elif attempt.done():  # connected once, refused since (credentials changed on the server)
                log.error("nats.credentials_refused", servers=where, error=text)
            return
        now = asyncio.get_running_loop().time()
        if now - said > 5:
            said = now
            log.warning("nats.waiting_for_server", servers=where, error=describe_error(exc))

    if "tls" not in kwargs and needs_tls(list(urls)):
        kwargs["tls"] = client_context()  # verified against $MAZE_TLS_CA or the system's CAs
    attempt = asyncio.ensure_future(
        nats.connect(
            servers=list(urls),
            name=name,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            error_cb=on_error,
            **kwargs,
        )
    )
    try:
        waits: set[asyncio.Future[Any]] = {attempt, refused}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        attempt.cancel()
        raise
    if refused.done():
        attempt.cancel()
        with contextlib.suppress(BaseException):
            nc = await attempt
            await nc.close()
        raise Unavailable(
            f"the NATS server at {where} refused this process's credentials ({refused.result()}): it is not "
            "the server meant (another head's on that port?), or the token or user is wrong"
        )
    try:
        nc = attempt.result()
    except Exception as exc:  # nats raises several unrelated types here
        raise Unavailable(f"cannot connect to NATS at {where}: {exc}") from exc
    if js_api_prefix:
        nc._maze_api_prefix = js_api_prefix  # type: ignore[attr-defined]
    return nc


async def ensure_streams(
    js: JetStreamContext,
    replicas: int = 1,
    lower: bool = False,
    logs_max_bytes: int = LOGS_MAX_BYTES,
    logs_max_age_s: float = LOGS_MAX_AGE_S,
) -> None:
    """Create (or update) the streams Maze needs. Safe to call from every process. Existing
    streams keep more copies than `replicas` unless `lower` (an explicit `--replicas`)."""
    layout = [
        (subjects.RUNS_STREAM, subjects.RUN_SUBJECTS, RetentionPolicy.LIMITS),
        (subjects.WORK_STREAM, subjects.WORK_SUBJECTS, RetentionPolicy.WORK_QUEUE),
        (subjects.NODES_STREAM, subjects.NODE_SUBJECTS, RetentionPolicy.LIMITS),
    ]
    configs = [
        StreamConfig(
            name=name,
            subjects=[subject],
            storage=StorageType.FILE,
            retention=retention,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        )
        for name, subject, retention in layout
    ]
    configs[1] = work = _work_stream_config(replicas)
    await _recreate_if_storage_changed(js, work)
    configs.append(
        # the Object Store's own stream layout (nats-py's create_object_store), made here so that
        # it is replicated like the rest and updated in place
        StreamConfig(
            name=subjects.BLOB_STREAM,
            subjects=[f"$O.{subjects.BLOB_BUCKET}.C.>", f"$O.{subjects.BLOB_BUCKET}.M.>"],
            storage=StorageType.FILE,
            num_replicas=replicas,
            discard=DiscardPolicy.NEW,
            # no rollups: every worker may write blobs, and one `Nats-Rollup: all` header would
            # purge the whole stream (a blob's meta messages are read last-first instead)
            allow_rollup_hdrs=False,
            allow_direct=True,
            max_bytes=-1,
        )
    )
    configs.append(
        # what tasks print: bounded (oldest dropped first), read by direct gets (maze/api/log_reader.py)
        StreamConfig(
            name=subjects.LOGS_STREAM,
            subjects=[subjects.LOG_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_bytes=logs_max_bytes,
            max_age=logs_max_age_s,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
            allow_direct=True,
            allow_rollup_hdrs=False,  # workers write here: no rollup may purge another's lines
        )
    )
    for config in configs:
        if config.name == subjects.LOGS_STREAM:
            await _put_logs_stream(js, config, replicas, lower)
        else:
            await _put_stream(js, config, replicas, lower)
    for bucket in (
        KeyValueConfig(
            bucket=subjects.CONTROLLER_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas
        ),
        KeyValueConfig(bucket=subjects.LEADER_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas),
        # workspace files (maze/events/workspace_files.py): only heads write there
        KeyValueConfig(
            bucket=subjects.WORKSPACE_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas
        ),
        # the workflow builder's saved graphs (maze/events/saved_workflows.py): only heads write there
        KeyValueConfig(
            bucket=subjects.WORKFLOW_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas
        ),
        _heartbeat_bucket_config(replicas),
    ):
        await _put_bucket(js, bucket, replicas, lower)
    await _no_rollups_in_beats(js)


def _work_stream_config(replicas: int) -> StreamConfig:
    """The work stream: transport (what it holds is sent again from the log), kept in memory."""
    return StreamConfig(
        name=subjects.WORK_STREAM,
        subjects=[subjects.WORK_SUBJECTS],
        storage=StorageType.MEMORY,
        retention=RetentionPolicy.WORK_QUEUE,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
        max_age=WORK_MAX_AGE_S,
        max_bytes=WORK_MAX_BYTES,
        max_msgs=WORK_MAX_MSGS,
        discard=DiscardPolicy.OLD,
    )


def _heartbeat_bucket_config(replicas: int) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=subjects.HEARTBEAT_BUCKET,
        history=1,
        ttl=HEARTBEAT_TTL_S,
        storage=StorageType.MEMORY,
        replicas=replicas,
    )


async def _put_bucket(js: JetStreamContext, bucket: KeyValueConfig, replicas: int, lower: bool) -> None:
    try:
        await js.create_key_value(bucket)
    except BadRequestError:  # made before with other replicas: its stream is updated in place
        info = await js.stream_info(f"KV_{bucket.bucket}")
        if lower or (info.config.num_replicas or 1) < replicas:
            info.config.num_replicas = replicas
            await js.update_stream(info.config)


async def _no_rollups_in_beats(js: JetStreamContext) -> None:
    # every worker writes its heartbeat in this bucket: no rollups there (one `Nats-Rollup: all`
    # would purge every node's). Maze never purges it (a put and a delete need none).
    beats = (await js.stream_info(f"KV_{subjects.HEARTBEAT_BUCKET}")).config
    if beats.allow_rollup_hdrs:
        beats.allow_rollup_hdrs = False
        await js.update_stream(beats)


async def ensure_memory_streams(js: JetStreamContext, replicas: int = 1, lower: bool = False) -> None:
    """Only the streams kept in memory (the work stream, the heartbeat bucket), made or updated
    as `ensure_streams` makes them: what a NATS server that restarted comes back without
    (maze/head/stream_keeper.py). Nothing else is touched."""
    await _put_stream(js, _work_stream_config(replicas), replicas, lower)
    await _put_bucket(js, _heartbeat_bucket_config(replicas), replicas, lower)
    await _no_rollups_in_beats(js)


async def _put_stream(js: JetStreamContext, config: StreamConfig, replicas: int, lower: bool) -> None:
    try:
        info = await js.stream_info(str(config.name))
    except NotFoundError:
        await js.add_stream(config)
        return
    # fewer copies than the stream has only when asked for (`--replicas`): a count of
    # servers that came out low (a peer restarting) must not drop copies of the log
    if not lower and (info.config.num_replicas or 1) > replicas:
        config.num_replicas = info.config.num_replicas
    await js.update_stream(config)


async def _put_logs_stream(js: JetStreamContext, config: StreamConfig, replicas: int, lower: bool) -> None:
    """The logs stream, whose `max_bytes` JetStream reserves on disk up front: where the server
    has less room (its `max_file_store`), it is made smaller, halving down to LOGS_MIN_BYTES,
    and said; where not even that fits, the head runs without task logs (said too), never
    failing to start for them."""
    wanted = config.max_bytes or LOGS_MAX_BYTES
    while True:
        try:
            await _put_stream(js, config, replicas, lower)
        except APIError as exc:
            if exc.err_code != _INSUFFICIENT_STORAGE:
                raise
            smaller = (config.max_bytes or wanted) // 2
            if smaller < LOGS_MIN_BYTES:
                log.error("logs.stream_not_made", stream=config.name, error=describe_error(exc))
                return
            config.max_bytes = smaller
            continue
        if config.max_bytes != wanted:
            log.warning("logs.stream_smaller", stream=config.name, max_bytes=config.max_bytes, wanted=wanted)
        return


async def default_replicas(urls: Sequence[str], settle_s: float = 5.0) -> int:
    """Replicas for Maze's streams when `--replicas` is not given: min(3, servers in the cluster)
    (one copy on a lone server; three on a cluster, so that losing a server loses nothing).

    Counted from the INFO of a connection made now (call it once JetStream answers, so the
    cluster has formed): the one the head has held since before may predate its peers. A server
    learns its peers by gossip, a moment after JetStream answers: while it knows of fewer servers
    than the URLs given name, it is asked again, for up to `settle_s`."""
    named = min(3, len({_host_port(u) for u in urls}))
    deadline = time.monotonic() + settle_s
    while True:
        nc = await connect(urls, "maze-head-probe")
        try:
            info = nc._server_info or {}
        finally:
            await nc.close()
        if not info.get("cluster"):
            return 1
        seen = max(1, min(3, len(info.get("connect_urls") or [])))
        if seen >= named or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.25)


def _host_port(url: str) -> str:
    return url.rsplit("@", 1)[-1].split("://", 1)[-1].rstrip("/")


async def _recreate_if_storage_changed(js: JetStreamContext, config: StreamConfig) -> None:
    """A stream's storage type cannot be updated in place. The work stream is transport (its
    content is sent again from the log), so one made by an older version on file is recreated."""
    try:
        info = await js.stream_info(str(config.name))
    except NotFoundError:
        return
    if info.config.storage != config.storage:
        log.warning(
            "streams.recreated_for_storage",
            stream=config.name,
            was=str(info.config.storage),
            now=str(config.storage),
        )
        await js.delete_stream(str(config.name))


def work_consumer_config(node_id: str) -> ConsumerConfig:
    """Node `node_id`'s durable pull consumer on its own work subject."""
    durable = f"worker-{node_id}"
    return ConsumerConfig(
        name=durable,  # CONSUMER.CREATE.<stream>.<name>.<filter>
        durable_name=durable,
        filter_subject=subjects.work_subject(node_id),
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=100_000,
    )


async def ensure_work_consumer(js: JetStreamContext, node_id: str) -> None:
    """Make node `node_id`'s work consumer (the same config again is a no-op). On the embedded
    server the head makes it, when it hands out the node's credentials: a worker may not create
    consumers at all, since a consumer's deliver subject could be any subject (maze/head/nats_auth.py)."""
    await js.add_consumer(subjects.WORK_STREAM, work_consumer_config(node_id))


SALT_KEY = "message-id-salt"


async def cluster_salt(js: JetStreamContext) -> str:
    """The heads' shared secret that salts their message ids (EventStore.salt), made once, kept in
    the controller's bucket (which no worker can read)."""
    kv = await js.key_value(subjects.CONTROLLER_BUCKET)
    try:
        await kv.create(SALT_KEY, secrets.token_hex(8).encode())
    except KeyWrongLastSequenceError:  # made by another head (or an earlier start) already
        pass
    entry = await kv.get(SALT_KEY)
    return (entry.value or b"").decode()


async def heartbeat_bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(subjects.HEARTBEAT_BUCKET)


def batch_msg_id(events: Sequence[Event]) -> str:
    """Deterministic Nats-Msg-Id for a message of events: the same decisions give the same id, so a
    publish retried after a crash is deduplicated by the server (within its duplicate window)."""
    if len(events) == 1:
        return event_key(events[0])
    digest = hashlib.sha256("|".join(event_key(e) for e in events).encode()).hexdigest()[:40]
    return f"batch/{digest}"


# Raised while a stream's leader is being (re-)elected or the connection is moving to another
# server: the same publish, with the same Nats-Msg-Id, is safe to repeat.
TRANSIENT = (NoStreamResponseError, NoRespondersError, nats.errors.TimeoutError, ServiceUnavailableError)
# What a publish can raise while the connection is down or moving: wait for it, then repeat.
_WAITABLE = (
    *TRANSIENT,
    Unavailable,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    asyncio.TimeoutError,
    ConnectionError,
)


def describe_error(exc: BaseException) -> str:
    """One line for a publish error: nats-py's JetStream API errors print empty by themselves."""
    description = getattr(exc, "description", None)
    if description:
        return f"{type(exc).__name__}: {description} (err_code {getattr(exc, 'err_code', None)})"
    return repr(exc)


class Room:
    """Whether this process's writes found the store full: since when (monotonic seconds), while
    the last refusal for lack of room is younger than FULL_SHOWN_S and no write to a file-backed
    stream was stored after it (None: not so). `/readyz` says it."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.last: float = 0.0

    @property
    def full_since(self) -> float | None:
        if self.since is not None and time.monotonic() - self.last > FULL_SHOWN_S:
            self.since = None
        return self.since

    def refused(self) -> None:
        self.last = time.monotonic()
        if self.since is None:
            self.since = self.last

    def stored(self, subject: str = "") -> None:
        if not subject.startswith(subjects.WORK_PREFIX):  # (kept in memory: says nothing of disk)
            self.since = None


ROOM = Room()

# JetStream's answers to a write its storage refuses: insufficient resources (the server's
# max_file_store / max_memory_store), an account's resource limits exceeded. (A full disk is no
# such answer: nats-server then turns JetStream off, and writes go unanswered: Unavailable.)
STORE_FULL_CODES = frozenset({10023, 10002})
# A refusal for room is repeated this long first (a clustered stream's leader that has no room
# steps down for one that has), then said: not after the `within_s` of a store that does not answer
FULL_RETRY_S = 3.0
# A refusal for room is shown by /readyz this long after it was seen, unless a write is stored
# (a head that writes nothing, a standby, would otherwise never see the room come back)
FULL_SHOWN_S = 60.0


def store_full(exc: BaseException | dict[str, Any], subject: str) -> StoreFull | None:
    """The StoreFull that JetStream's refusal `exc` (an exception, or the error of a raw ack)
    means, or None when it is another error. A refusal for room on a file-backed stream is noted
    in ROOM (what /readyz says)."""
    if isinstance(exc, dict):
        code, description = exc.get("err_code"), exc.get("description")
    else:
        code, description = getattr(exc, "err_code", None), getattr(exc, "description", None)
    if code not in STORE_FULL_CODES:
        return None
    if not subject.startswith(subjects.WORK_PREFIX):  # (kept in memory: says nothing of disk)
        ROOM.refused()
    return StoreFull(
        f"the event store is full: JetStream refused a write to {subject} ({description}, error "
        f"{code}): a storage limit is reached (the server's max_file_store, an account's). That "
        "write was not recorded; it is taken once the store has room.",
        subject=subject,
        err_code=code,
    )


async def kv_put(kv: KeyValue, key: str, value: bytes) -> int:
    """`kv.put`, with a refusal for lack of room said as StoreFull."""
    try:
        revision = await kv.put(key, value)
    except APIError as exc:
        full = store_full(exc, f"the key-value bucket {kv._name!r}")
        if full is not None:
            raise full from exc
        raise
    return revision


def is_transient(exc: BaseException) -> bool:
    """Whether the same publish may succeed later unchanged (a leader election, a reconnect, a
    timeout). Everything else (a payload above `max_payload`, a stream refusing the message for its
    limits or its permissions) is permanent: repeating it can only fail the same way."""
    return isinstance(exc, _WAITABLE)


# Told (subject, seconds) of every acknowledged `publish_durably` in this process, retries
# included: the head's metrics (maze/head/metrics.py). Set by the process that wants it, so that this
# layer depends on no metrics library.
PublishObserver = Callable[[str, float], None]
_publish_observers: list[PublishObserver] = []


def observe_publishes(observer: PublishObserver) -> Callable[[], None]:
    """Tell `observer` how long each acknowledged publish took; returns what stops it."""
    _publish_observers.append(observer)
    return lambda: _publish_observers.remove(observer)


async def publish_durably(
    js: JetStreamContext, subject: str, data: bytes, hdrs: dict[str, str], within_s: float = 20.0
) -> PubAck:
    """Publish and wait for the stream's ack, retrying through leader elections and reconnects.
    Raises Unavailable when the store does not acknowledge within `within_s`."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + within_s
    delay = 0.05
    while True:
        try:
            ack = await js.publish(subject, data, headers=hdrs)
        except (*TRANSIENT, APIError) as exc:
            full = store_full(exc, subject)
            if full is not None and loop.time() + delay > began + FULL_RETRY_S:
                raise full from exc  # (said within seconds, not after `within_s`)
            if full is None and not isinstance(exc, TRANSIENT):
                raise
            if loop.time() + delay > deadline:
                raise Unavailable(
                    f"the event store did not acknowledge a write to {subject}: {exc!r}"
                ) from exc
            log.warning("publish.retrying", subject=subject, error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        ROOM.stored(subject)
        for observer in _publish_observers:
            observer(subject, loop.time() - began)
        return ack


class EventStore:
    """Publishes events. Every publish carries a deterministic Nats-Msg-Id; callers that publish
    many messages use `publish_many`, which pipelines them and waits for all acks together."""

    def __init__(self, nc: NATS, reporter: str | None = None, salt: str = "") -> None:
        self.nc = nc
        # a worker's node id: its reports go on its own subject of each run (maze/events/authority.py)
        self.reporter = reporter
        # Appended to every message id. JetStream deduplicates ids across the whole stream, so a
        # writer that could guess another's ids (a worker, those of the head's decisions) could
        # store them first, on its own subject, and have the real message dropped as a duplicate.
        # The heads share a secret salt (`cluster_salt`); a worker salts with its session.
        self.salt = salt
        self.js = jetstream(nc)
        self.budget = payload_budget(nc)

    async def publish(
        self,
        subject: str,
        events: Sequence[Event],
        data: bytes | None = None,
        key: str | None = None,
        after_seq: int | None = None,
    ) -> PubAck:
        """Publish events of one run (or node) as one message; returns the store's ack (its stream
        sequence, and whether it was a duplicate of a message stored before). `key`: the message's
        identity when it is not that of all its events (an append whatever placements ride with
        it: the same append sent again is the same message). `after_seq`: stored only if the last
        message on `subject` is still that one (else the store refuses it: WrongLastSequence)."""
        hdrs = {
            headers.MSG_ID: (key or batch_msg_id(events)) + (f"/{self.salt}" if self.salt else ""),
            headers.EVENT_TYPES: ",".join(sorted({event_tag(e) for e in events})),
            headers.SCHEMA_VERSION: headers.SCHEMA,
        }
        if after_seq is not None:
            hdrs[headers.EXPECTED_LAST_SUBJECT_SEQ] = str(after_seq)
        payload = encode_events(list(events)) if data is None else data
        if len(payload) > self.budget:
            raise PayloadTooLarge(
                f"{len(events)} event(s) are {len(payload)} bytes encoded, above the message limit "
                f"of {self.budget} bytes",
                size=len(payload),
                limit=self.budget,
            )
        return await publish_durably(self.js, subject, payload, hdrs)

    async def publish_many(self, messages: Sequence[tuple[str, Sequence[Event]]]) -> list[PubAck]:
        """Pipelined across entries: every entry's first message in flight at once, then every ack
        awaited. An entry whose events need several messages (each at most `budget` bytes) sends
        them one after another, so that a publish retried through a leader election cannot store
        them out of order. Returns the stream sequence of each message, entry by entry."""

        async def in_order(subject: str, events: Sequence[Event]) -> list[PubAck]:
            return [await self.publish(subject, chunk, data) for chunk, data in self.split(events)]

        done = await asyncio.gather(*(in_order(s, events) for s, events in messages))
        return [ack for acks in done for ack in acks]

    def split(self, events: Sequence[Event]) -> list[tuple[list[Event], bytes]]:
        """Consecutive groups of events, each with its encoded message, within the byte budget.
        One event larger than the budget raises PayloadTooLarge (a permanent error)."""
        encoded = [_encoder.encode(e) for e in events]
        if sum(len(b) for b in encoded) + 8 <= self.budget:
            return [(list(events), encode_events(list(events)))]
        out = []
        for part in pack_by_bytes([len(b) for b in encoded], self.budget):
            out.append(([events[i] for i in part], _encoder.encode([msgspec.Raw(encoded[i]) for i in part])))
        return out

    async def publish_runs(self, events: Sequence[Event]) -> dict[str, list[PubAck]]:
        """Publish events grouped into one message per run (more when they exceed the byte
        budget), pipelined. Returns each run's acks; raises the first error."""
        acks: dict[str, list[PubAck]] = {}
        for run_id, result in (await self.publish_runs_settled(events)).items():
            if isinstance(result, BaseException):
                raise result
            acks[run_id] = result
        return acks

    async def publish_runs_settled(self, events: Sequence[Event]) -> dict[str, list[PubAck] | BaseException]:
        """As `publish_runs`, but every run's publish runs to its end: each run's acks, or the
        error its publish ended with (some of that run's messages may be stored even then)."""
        grouped = group_by_run(events)

        async def one_run(run_id: str, run_events: list[Event]) -> list[PubAck]:
            subject = (
                subjects.report_subject(run_id, self.reporter)
                if self.reporter
                else subjects.run_subject(run_id)
            )
            return [await self.publish(subject, chunk, data) for chunk, data in self.split(run_events)]

        results = await asyncio.gather(
            *(one_run(r, evs) for r, evs in grouped.items()), return_exceptions=True
        )
        return dict(zip(grouped, results, strict=True))


def group_by_run(events: Sequence[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.run_id].append(event)  # type: ignore[union-attr]
    return grouped


async def last_run_seq(js: JetStreamContext, run_id: str, reports: bool = False) -> int:
    """The stream sequence of the run's last message on the head's subject (0: the log has no such
    run), or (`reports`) on any of its subjects, its workers' reports included."""
    last = 0
    for subject in subjects.run_filters(run_id) if reports else [subjects.run_subject(run_id)]:
        try:
            msg = await js.get_last_msg(subjects.RUNS_STREAM, subject)
        except NotFoundError:
            continue
        last = max(last, int(msg.seq or 0))
    return last


async def subscribe_ordered(
    js: JetStreamContext,
    subject: str,
    start_seq: int = 1,
    cb: Callable[[Msg], Awaitable[None]] | None = None,
    filters: list[str] | None = None,
) -> JetStreamContext.PushSubscription:
    """An ordered (gap-free, auto-recovering) push consumer from stream sequence `start_seq`, on
    `subject` or (`filters`) on several subjects of its stream. nats-py (2.16) answers the server's
    flow control as a message arrives, not as `cb` takes it, so what arrives faster than `cb` runs
    queues in nats-py, which past its limits (256 MiB or 524,288 messages) drops it with only a slow
    consumer's error, the ordered consumer none the wiser: a `cb` must keep up (the live folds
    hand batches to a thread; a whole-log replay reads with maze/events/log_reader.py instead)."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, start_seq),
        filter_subjects=filters,
    )
    return await js.subscribe(subject, ordered_consumer=True, config=config, cb=cb)
