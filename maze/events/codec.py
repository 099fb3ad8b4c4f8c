"""Encoding and decoding of events and work items. One reusable encoder/decoder each.

A message on a run or node subject carries a list of events of that run (or node) whose order is
fixed; each is decoded on its own so that an unknown tag from a newer writer is skipped, not fatal.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog

from maze.events.catalog import Event, event_tag
from maze.events.runs import RunCreated, TasksAdded
from maze.events.specs import InputValue
from maze.events.tasks import AttemptSucceeded
from maze.events.values import decode_opaque, describe, describe_map
from maze.events.work import WorkBatch

log = structlog.get_logger(__name__)

_encoder = msgspec.msgpack.Encoder()
_raw_list = msgspec.msgpack.Decoder(list[msgspec.Raw])
_event = msgspec.msgpack.Decoder(Event)
_work = msgspec.msgpack.Decoder(WorkBatch)
_json_encoder = msgspec.json.Encoder()


def encode_events(events: list[Event]) -> bytes:
    return _encoder.encode(events)


def decode_events(data: bytes) -> list[Event]:
    out: list[Event] = []
    for raw in _raw_list.decode(data):
        try:
            out.append(_event.decode(raw))
        except msgspec.ValidationError as exc:
            # A newer writer's event type: skip it rather than stop the reader.
            log.warning("event.skipped_unknown", error=str(exc))
    return out


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
    if isinstance(event, RunCreated | TasksAdded):
        for task_data, spec in zip(data["tasks"], event.tasks, strict=True):
            for name, given in spec.inputs.items():
                if isinstance(given, InputValue):
                    value = decode_opaque(given.data)
                    entry = {"type": "value", "value": describe(value, with_data=True)}
                    if isinstance(value, msgspec.msgpack.Ext):
                        entry["encoded"] = True
                    task_data["inputs"][name] = entry
    return data


def to_json(value: Any) -> bytes:
    return _json_encoder.encode(value)
