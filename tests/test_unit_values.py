"""The wire form of task values, the byte packing of messages and the outbox's last resort: pure
functions, no NATS."""

from __future__ import annotations

import datetime
import threading
from collections import OrderedDict

import msgspec
import pytest
from msgspec.msgpack import Ext

from maze.core.errors import PayloadTooLarge, SerializationError, ValidationError
from maze.events import values
from maze.events.fit import make_fit
from maze.events.specs import TaskError
from maze.events.store import pack_by_bytes
from maze.events.tasks import AttemptFailed, AttemptStarted, AttemptSucceeded
from maze.workers.child import _encode_outputs, clip


class Custom:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom)


@pytest.mark.parametrize(
    "value",
    [None, True, 1, -(2**63), 2**64 - 1, 1.5, "s", b"b", [1, [2, "x"]], {"a": {"b": [None]}}, {1: "int key"}],
)
def test_plain_values_keep_the_msgpack_path_and_their_exact_type(value: object) -> None:
    assert values.is_plain(value)
    codec, content = values.encode_content(value, "v")
    assert codec == "msgpack"
    assert values.ValueDecoder().decode(values.wire_from_content(codec, content, "t")) == value


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        (1, 2),
        {1, 2},
        frozenset({"a"}),
        [1, (2, 3)],
        {"k": {1, 2}},
        {(1, 2): "tuple key"},
        datetime.date(2026, 1, 1),
        Custom(),
        OrderedDict(a=1),
        bytearray(b"x"),
    ],
)
def test_everything_else_is_pickled_and_comes_back_as_itself(value: object) -> None:
    assert not values.is_plain(value)
    codec, content = values.encode_content(value, "v")
    assert codec == "pickle"
    wire = values.wire_from_content(codec, content, values.type_name(value))
    back = values.ValueDecoder().decode(wire)
    assert back == value and type(back) is type(value)
    opaque = values.decode_opaque(wire)
    assert isinstance(opaque, Ext) and opaque.code == values.EXT_PICKLE  # the head never unpickles
    assert values.describe(opaque)["type"] == values.type_name(value)


def test_what_cannot_be_serialized_names_where_and_the_type() -> None:
    with pytest.raises(SerializationError, match=r"output 'lock' of task 'f': a value of type _thread\.lock"):
        values.encode_content(threading.Lock(), "output 'lock' of task 'f'")
    ok, error = _encode_outputs("f", {"fine": 1, "lock": threading.Lock()}, blob_max=1 << 20)
    assert not ok and error["error_type"] == "serialization_error" and "'lock'" in error["message"]
    ok, error = _encode_outputs("f", {"big": b"x" * 2000}, blob_max=1000)
    assert not ok and error["error_type"] == "payload_too_large" and "limit of 1000 bytes" in error["message"]
    ok, error = _encode_outputs("f", {1: "x"}, blob_max=1000)
    assert not ok and error["error_type"] == "invalid_result"


def test_blob_references_are_found_and_rebuilt_from_fetched_content() -> None:
    content = msgspec.msgpack.encode(list(range(1000)))
    ref = values.blob_ref_for("msgpack", content, "list")
    wire_map = msgspec.msgpack.encode({"a": msgspec.Raw(values.wire_blob(ref)), "b": 1})
    assert values.blob_refs(wire_map) == [ref]
    assert values.ValueDecoder({ref.sha256: content}).decode(wire_map) == {"a": list(range(1000)), "b": 1}
    described, encoded = values.describe_map(wire_map)
    assert encoded == ["a"] and described["a"]["uri"] == ref.uri and described["b"] == 1
    with pytest.raises(KeyError, match="was not fetched"):
        values.ValueDecoder().decode(wire_map)


def test_values_from_outside_are_checked() -> None:
    nested = msgspec.msgpack.encode([Ext(values.EXT_PICKLE, b"x")])
    with pytest.raises(ValidationError, match="only appear at the top"):
        values.check_wire(nested, "input")
    with pytest.raises(ValidationError, match="unknown extension"):
        values.check_wire(msgspec.msgpack.encode(Ext(9, b"x")), "input")
    with pytest.raises(ValidationError, match="not a valid encoded value"):
        values.check_wire(b"\xc1", "input")
    with pytest.raises(ValidationError, match="send it as 'encoded'"):
        values.encode_plain({"k": Ext(values.EXT_BLOB, b"x")})


def test_the_largest_values_are_spilled_first_until_the_message_fits() -> None:
    sizes = {"a": 100, "b": 5000, "c": 3000, "d": 50}
    assert values.keys_to_spill(sizes, 0) == []
    assert values.keys_to_spill(sizes, 4000) == ["b"]
    assert values.keys_to_spill(sizes, 6000) == ["b", "c"]
    assert values.keys_to_spill(sizes, 10**6) == ["b", "c"]  # small values are never worth moving


def test_messages_are_packed_within_the_budget() -> None:
    sizes = [400, 400, 400, 100, 900]
    parts = pack_by_bytes(sizes, 1000, overhead=0)
    assert parts == [range(0, 2), range(2, 4), range(4, 5)]
    assert all(sum(sizes[i] for i in p) <= 1000 for p in parts)
    with pytest.raises(PayloadTooLarge, match="above the message limit of 1000"):
        pack_by_bytes([10, 1001], 1000, overhead=0)


def test_an_event_that_can_never_fit_is_replaced_not_retried() -> None:
    big = AttemptSucceeded(run_id="r", task_id="t", attempt=1, node_id="n", at_ms=1, result=b"x" * 5000)
    error = TaskError(error_type="user_code", message="m" * 6000, traceback="t" * 9000)
    failed = AttemptFailed(run_id="r", task_id="u", attempt=1, at_ms=1, error=error)
    fine = AttemptStarted(run_id="r", task_id="v", attempt=1, node_id="n", at_ms=1)
    out = make_fit([big, failed, fine], budget=4096)
    assert isinstance(out[0], AttemptFailed) and out[0].error.error_type == "payload_too_large"
    assert (out[0].task_id, out[0].attempt) == ("t", 1)
    assert isinstance(out[1], AttemptFailed) and out[1].error.message.startswith("m" * 4000 + "…")
    assert len(out[1].error.traceback or "") <= 8002
    assert out[2] is fine


def test_error_texts_are_bounded() -> None:
    assert clip("abc", 10) == "abc"
    assert clip("x" * 50, 10) == "x" * 10 + "… (40 more characters)"
