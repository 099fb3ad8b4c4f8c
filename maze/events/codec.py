"""Encoding and decoding of events and work items. One reusable encoder/decoder each.

A message on a run or node subject carries a list of events of that run (or node) whose order is
fixed; each is decoded on its own so that an unknown tag from a newer writer is skipped, not fatal.
"""

from __future__ import annotations

import typing
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import structlog

from maze.core.task_machine import foreign
from maze.events import subjects
from maze.events.agents import AgentDecided, AgentFinal, AgentObserved, AgentToolCall
from maze.events.authority import REPORTS, split_admissible
from maze.events.catalog import Event, event_tag, fenced
from maze.events.runs import RunCreated, TasksAdded
from maze.events.specs import InputGather, InputRef, InputValue
from maze.events.tasks import AttemptSucceeded
from maze.events.values import decode_opaque, describe, describe_map
from maze.events.work import WorkBatch

log = structlog.get_logger(__name__)

_encoder = msgspec.msgpack.Encoder()
_raw_list = msgspec.msgpack.Decoder(list[msgspec.Raw])
_event = msgspec.msgpack.Decoder(Event)
_events = msgspec.msgpack.Decoder(list[Event])
_work = msgspec.msgpack.Decoder(WorkBatch)
_json_encoder = msgspec.json.Encoder()


def encode_events(events: list[Event]) -> bytes:
    return _encoder.encode(events)


class _Tagged(msgspec.Struct):
    type: str = ""


_tag_only = msgspec.msgpack.Decoder(_Tagged)
KNOWN_TAGS = frozenset(t.__struct_config__.tag for t in typing.get_args(Event))


class Malformed(NamedTuple):
    """An event of a type this version knows whose body does not decode as that type."""

    tag: str
    error: str


class Decoded(NamedTuple):
    events: list[Event]
    unknown: list[str]  # tags of a newer version's event types, skipped
    malformed: list[Malformed]
    # events a worker wrote where it may not (maze/events/authority.py): refused, never folded
    refused: list[Malformed] = []


_NONE_REFUSED: list[Malformed] = []  # never changed (as the default above)


class DecodeStats:
    """What readers skipped, for `/cluster/diagnostics`: unknown event types by tag (a newer
    writer's, expected during an upgrade) and malformed events of known types (never expected:
    each is also logged as an error)."""

    def __init__(self) -> None:
        self.unknown: dict[str, int] = {}
        self.malformed = 0
        self.refused = 0  # events written where their writer may not write them
        self.recent_malformed: deque[dict[str, Any]] = deque(maxlen=50)
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()

    def note(self, decoded: Decoded, where: dict[str, Any]) -> None:
        """Count what one message held that could not be read; a message that several readers
        (the controller, the projector) report is counted once."""
        if "stream" in where and "seq" in where:
            key = (where["stream"], where["seq"])
            if key in self._seen:
                return
            self._seen[key] = None
            if len(self._seen) > 10_000:
                self._seen.popitem(last=False)
        for tag in decoded.unknown:
            if tag not in self.unknown:
                log.warning("event.skipped_unknown_type", type=tag, **where)
            self.unknown[tag] = self.unknown.get(tag, 0) + 1
        for bad in decoded.malformed:
            self.malformed += 1
            self.recent_malformed.append({"type": bad.tag, "error": bad.error, **where})
            log.error("event.malformed", type=bad.tag, error=bad.error, **where)
        for bad in decoded.refused:
            self.refused += 1
            self.recent_malformed.append({"type": bad.tag, "refused": bad.error, **where})
            log.error("event.refused", type=bad.tag, reason=bad.error, **where)

    def snapshot(self) -> dict[str, Any]:
        return {
            "unknown_event_types": dict(self.unknown),
            "malformed_events": self.malformed,
            "refused_events": self.refused,
            "recent_malformed": list(self.recent_malformed),
        }


decode_stats = DecodeStats()


def append_events(message: bytes, events: list[bytes]) -> bytes:
    """A message (an encoded list of events) with more encoded events at its end: its list header
    is rewritten and its body kept as it is (a wide run's first message is megabytes: not
    decoded or encoded again for a few more events)."""
    first = message[0]
    if 0x90 <= first <= 0x9F:
        count, start = first & 0x0F, 1
    elif first == 0xDC:
        count, start = int.from_bytes(message[1:3], "big"), 3
    elif first == 0xDD:
        count, start = int.from_bytes(message[1:5], "big"), 5
    else:
        raise ValueError(f"not an encoded list of events (it starts with byte {first:#x})")
    total = count + len(events)
    if total < 16:
        header = bytes([0x90 | total])
    elif total < 1 << 16:
        header = b"\xdc" + total.to_bytes(2, "big")
    else:
        header = b"\xdd" + total.to_bytes(4, "big")
    return b"".join([header, memoryview(message)[start:], *events])


def decode_message(data: bytes) -> Decoded:
    """A message's events. An event whose type this version does not know (a newer writer's) is
    skipped and named in `unknown`; one of a known type that does not decode is named in
    `malformed`. A message that is not a list of events at all raises msgspec.DecodeError."""
    try:  # every event known and sound (what a log mostly holds): one pass
        # the tuple made directly: a NamedTuple's own constructor is Python code (~0.3 us a
        # message, read by every fold of every message of the log)
        return tuple.__new__(Decoded, (_events.decode(data), [], [], _NONE_REFUSED))
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass  # each event on its own, to say which one is not, and keep the others
    events: list[Event] = []
    unknown: list[str] = []
    malformed: list[Malformed] = []
    for raw in _raw_list.decode(data):
        try:
            events.append(_event.decode(raw))
            continue
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            error = str(exc)
        try:
            tag = _tag_only.decode(raw).type
        except (msgspec.ValidationError, msgspec.DecodeError):
            tag = ""
        if tag and tag not in KNOWN_TAGS:
            unknown.append(tag)
        else:
            malformed.append(Malformed(tag or "?", error))
    return Decoded(events, unknown, malformed)


def with_authority(decoded: Decoded, subject: str | None) -> Decoded:
    """`decoded`, less the events its subject's writer may not write (moved to `refused`)."""
    reporter = subjects.reporter_of(subject) if subject else None
    if reporter is None or subject is None:  # the head's subject: all of it stands
        return decoded
    subject_run = subjects.run_of(subject)
    kept, refused = split_admissible(decoded.events, reporter, subject_run)
    if not refused and not decoded.malformed:
        return decoded
    why = (
        f"written on worker {reporter}'s subject of run {subject_run}, where only that node's own reports on "
        "that run stand"
        if subject_run
        else f"written on worker {reporter}'s node subject, where only that node's own sessions stand"
    )
    # what does not decode on a worker's subject cannot be told to be that node's own report: it is
    # refused like any other event a worker may not write, and never breaks the run it names (any
    # worker could otherwise end any run by writing garbage on its own subject of that run)
    unreadable = [Malformed(m.tag, f"{why}; it does not decode: {m.error}") for m in decoded.malformed]
    return Decoded(kept, decoded.unknown, [], [*(Malformed(event_tag(e), why) for e in refused), *unreadable])


PlacedOn = Callable[[str, str, int], str | None]


def without_foreign(decoded: Decoded, subject: str, placed_on: PlacedOn) -> Decoded:
    """`decoded` (read from a worker's `subject`), less its reports on attempts placed on another
    node than the one that wrote it (moved to `refused`): what every fold ignores is shown as
    refused too. `placed_on(run, task, attempt)`: where the attempt was placed, None when the
    reader does not know (the report is then left as it is: the folds ignore it if foreign)."""
    reporter = subjects.reporter_of(subject)
    if reporter is None or not decoded.events:
        return decoded
    kept: list[Event] = []
    refused = list(decoded.refused)
    for event in decoded.events:
        if isinstance(event, REPORTS):
            node = placed_on(event.run_id, event.task_id, event.attempt)
            if node is not None and foreign(event, node):
                why = f"a report of node {reporter} on attempt {event.attempt} of {event.task_id}, placed on {node}"
                refused.append(Malformed(event_tag(event), why))
                continue
        kept.append(event)
    if len(kept) == len(decoded.events):
        return decoded
    return Decoded(kept, decoded.unknown, decoded.malformed, refused)


def with_fence(decoded: Decoded, epoch: int) -> Decoded:
    """`decoded`, less the decisions of a leadership older than `epoch` (the latest one elected
    before them in the log): a deposed leader's late writes, refused as every fold refuses them."""
    if not epoch:
        return decoded
    kept = [e for e in decoded.events if not fenced(e, epoch)]
    if len(kept) == len(decoded.events):
        return decoded
    refused = [
        Malformed(
            event_tag(e),
            f"a decision of leadership epoch {getattr(e, 'epoch', 0)}, written after epoch {epoch} was elected",
        )
        for e in decoded.events
        if fenced(e, epoch)
    ]
    return Decoded(kept, decoded.unknown, decoded.malformed, [*decoded.refused, *refused])


def decode_events(data: bytes, **where: Any) -> list[Event]:
    """A message's events, for readers that only show or count them: what was skipped is noted in
    `decode_stats` (and a malformed or refused event logged as an error). `where` (stream, seq,
    subject) says where the message was: the subject also says who wrote it (authority)."""
    try:
        decoded = decode_message(data)
    except msgspec.DecodeError as exc:
        decoded = Decoded([], [], [Malformed("?", f"not a list of events: {exc}")])
    decoded = with_authority(decoded, where.get("subject"))
    if decoded.unknown or decoded.malformed or decoded.refused:
        decode_stats.note(decoded, where)
    return decoded.events


def encode_work(batch: WorkBatch) -> bytes:
    return _encoder.encode(batch)


def decode_work(data: bytes) -> WorkBatch:
    return _work.decode(data)


def encode_value(value: Any) -> bytes:
    """A plain value, msgpack-encoded. Raises msgspec.EncodeError / TypeError if it can't be.
    (Values of any kind go through maze.events.values.)"""
    return _encoder.encode(value)


def decode_value(data: bytes) -> Any:
    """A wire value decoded for the head: plain data as is, pickles and blob references left as
    opaque msgpack `Ext` objects (the head never unpickles)."""
    return decode_opaque(data)


def event_to_builtins(event: Event, seq: int) -> dict[str, Any]:
    """An event as JSON-ready data for the API. A result value or input that is not plain data is a
    descriptor (`{"__maze_value__": "pickle"|"blob", ...}`; an inline pickle carries its bytes in
    base64), and `encoded` lists which keys hold one. Code blobs are left out."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    data["type"] = event_tag(event)
    data["seq"] = seq
    if isinstance(event, AttemptSucceeded):
        data["result"], data["encoded"] = describe_map(event.result, with_data=True)
    if "functions" in data:
        data["functions"] = sorted(data["functions"])
    if isinstance(event, AgentDecided):
        data["action"] = _plain(event.action)
    elif isinstance(event, AgentToolCall):
        data["args"] = _plain(event.args)
    elif isinstance(event, AgentFinal):
        data["answer"] = _plain(event.answer)
    elif isinstance(event, AgentObserved):
        for shown, observation in zip(data["observations"], event.observations, strict=True):
            shown["entry"] = _plain(observation.entry)
    if isinstance(event, RunCreated) and event.agent is not None:
        data["agent"]["catalog"] = _plain(event.agent.catalog)
        data["agent"]["decide"] = {"func_name": event.agent.decide.func_name}
        for shown, tool in zip(data["agent"]["tools"], event.agent.tools, strict=True):
            shown["spec"] = {"func_name": tool.spec.func_name, "timeout_seconds": tool.spec.timeout_seconds}
            shown["defaults"] = {k: _plain(v) for k, v in tool.defaults.items()}
    if isinstance(event, RunCreated | TasksAdded):
        for task_data, spec in zip(data["tasks"], event.tasks, strict=True):
            if spec.carried is not None:  # the result it keeps from the run retried
                task_data["carried"], task_data["carried_encoded"] = describe_map(
                    spec.carried, with_data=True
                )
            for name, given in spec.inputs.items():
                if not isinstance(given, InputRef):
                    task_data["inputs"][name] = _shown_input(given)
    return data


def _plain(wire: bytes) -> Any:
    """A plain value the head recorded (an agent's action, arguments, observation), JSON-ready."""
    if not wire:
        return None
    return describe(decode_opaque(wire))


def _shown_input(given: InputValue | InputGather | InputRef) -> dict[str, Any]:
    """A recorded input as event JSON shows it: a literal value described (not as its bytes), a
    gathered list or dict item by item."""
    if isinstance(given, InputRef):
        return {"type": "ref", "task_id": given.task_id, "key": given.key}
    if isinstance(given, InputGather):
        return {
            "type": "gather",
            "items": [_shown_input(item) for item in given.items],
            "keys": list(given.keys) if given.keys is not None else None,
        }
    value = decode_opaque(given.data)
    entry = {"type": "value", "value": describe(value, with_data=True)}
    if isinstance(value, msgspec.msgpack.Ext):
        entry["encoded"] = True
    return entry


def to_json(value: Any) -> bytes:
    return _json_encoder.encode(value)


def shown_events(decoded: Decoded, seq: int) -> list[dict[str, Any]]:
    """A message's events as the API shows them. What this version cannot read is shown as such
    (unknown type, malformed), never left out in silence."""
    shown = [event_to_builtins(e, seq) for e in decoded.events]
    shown += [{"type": tag, "seq": seq, "unknown_type": True} for tag in decoded.unknown]
    shown += [{"type": m.tag, "seq": seq, "malformed": m.error} for m in decoded.malformed]
    shown += [{"type": m.tag, "seq": seq, "refused": m.error} for m in decoded.refused]
    return shown


def decode_leniently(data: bytes, subject: str | None = None) -> Decoded:
    """decode_message, with a message that is not a list of events at all shown as malformed, and
    (with its `subject`) what its writer may not write refused (maze/events/authority.py)."""
    try:
        decoded = decode_message(data)
    except msgspec.DecodeError as exc:
        decoded = Decoded([], [], [Malformed("?", f"the message is not a list of events: {exc}")])
    return with_authority(decoded, subject)
