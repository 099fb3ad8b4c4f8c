"""Task values on the wire: plain data as msgpack, anything else as cloudpickle, and anything
larger than the inline limit as a reference into the blob store.

A *wire value* is the msgpack encoding of one task input or output. It is one of:
- plain msgpack: None, bool, int in msgpack's range, float, str, bytes, and lists and str/int-keyed
  dicts of those, which decode back to exactly the same types (the fast path);
- extension `EXT_PICKLE` holding a `Pickled` (the type's name and its cloudpickle bytes): numpy
  arrays, DataFrames, sets, tuples, ints above 2**64, a user's own classes;
- extension `EXT_BLOB` holding a `BlobRef` to content stored by sha256 in the blob store
  (`maze://artifacts/sha256/<hex>`), whose bytes decode by `codec` ("msgpack" or "pickle");
- extension `EXT_FILE` holding a `StagedFile` (inputs only): a file in the blob store that the
  worker stages into the attempt's directory at `path`; the task gets `path` (a str).

An extension only ever appears at the top of a wire value, never nested, so a result map or an
inputs map is `{key: wire value}` and readers can find every blob reference one level down.

The head never unpickles: it carries extensions as opaque `Ext` objects (`decode_opaque`) and
describes them for people (`describe`). Only task processes and the SDK turn wire values back
into Python objects (`ValueDecoder`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import cloudpickle
import msgspec
from msgspec import Struct
from msgspec.msgpack import Ext

from maze.core import pickling
from maze.core.errors import PayloadTooLarge, SerializationError, ValidationError
from maze.events.artifacts import check_path

EXT_PICKLE = 1
EXT_BLOB = 2
EXT_FILE = 3
REFERENCES = (EXT_BLOB, EXT_FILE)  # extensions that stand for stored content: never spilled
URI_PREFIX = "maze://artifacts/sha256/"
MARKER = "__maze_value__"  # key of the JSON descriptor of a non-plain value
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")

_encoder = msgspec.msgpack.Encoder()


class Pickled(Struct, array_like=True, frozen=True):
    type_name: str
    data: bytes


class BlobRef(Struct, array_like=True, frozen=True):
    sha256: str
    size: int
    codec: str  # "msgpack" | "pickle": how the stored bytes decode
    type_name: str = ""

    @property
    def uri(self) -> str:
        return URI_PREFIX + self.sha256


class StagedFile(Struct, array_like=True, frozen=True):
    """A task input that is a file (`maze.FileInput`): its content in the blob store, staged by the
    worker at `path` (relative to the attempt directory) before the attempt runs. `source` is the
    URL it was read from, for people."""

    path: str
    sha256: str
    size: int
    source: str = ""

    @property
    def uri(self) -> str:
        return URI_PREFIX + self.sha256


_pickled = msgspec.msgpack.Decoder(Pickled)
_blobref = msgspec.msgpack.Decoder(BlobRef)
_staged = msgspec.msgpack.Decoder(StagedFile)


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def is_plain(value: Any, depth: int = 0) -> bool:
    """True if msgpack carries `value` and gives back exactly the same types (no tuple -> list,
    set -> list, subclass -> base class, datetime -> str, out-of-range int)."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None or kind is bytes:
        return True
    if kind is int:
        return bool(INT_MIN <= value <= INT_MAX)
    if depth > 64:
        return False
    if kind is list:
        return all(is_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(
            (type(k) is str or (type(k) is int and INT_MIN <= k <= INT_MAX)) and is_plain(v, depth + 1)
            for k, v in value.items()
        )
    return False


def encode_plain(value: Any) -> bytes:
    """A client's plain literal (JSON or msgpack data) as a wire value. An extension inside it is
    refused: encoded values come as `{"encoded": ...}`, checked by `check_wire`."""
    if _contains_ext(value):
        raise ValidationError("a plain value may not contain msgpack extensions; send it as 'encoded'")
    return _encoder.encode(value)


def too_large(where: str, size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{where}: the value is {size} bytes, above the blob store's limit of {limit} bytes",
        size=size,
        limit=limit,
    )


BLOB_WIRE_BYTES = 120  # about what a blob reference costs in place of a value


def keys_to_spill(sizes: Mapping[str, int], over_by: int) -> list[str]:
    """Which values to move to the blob store, largest first, so that a message `over_by` bytes
    too large fits. Empty when nothing is over; all of them when even that is not enough."""
    out: list[str] = []
    for key in sorted(sizes, key=lambda k: sizes[k], reverse=True):
        if over_by <= 0:
            break
        if sizes[key] <= BLOB_WIRE_BYTES:
            break
        out.append(key)
        over_by -= sizes[key] - BLOB_WIRE_BYTES
    return out


def encode_content(value: Any, where: str) -> tuple[str, bytes]:
    """(codec, bytes) for one value: msgpack when plain, else cloudpickle. Raises
    SerializationError (naming `where` and the type) when neither can carry it."""
    if is_plain(value):
        return "msgpack", _encoder.encode(value)
    try:
        return "pickle", pickling.dumps(value)  # methods of a user's classes name their own files
    except Exception as exc:
        raise SerializationError(
            f"{where}: a value of type {type_name(value)} cannot be serialized "
            f"(cloudpickle: {type(exc).__name__}: {exc})",
            type=type_name(value),
        ) from exc


def wire_from_content(codec: str, content: bytes, type_name_: str) -> bytes:
    """The inline wire form of encoded content."""
    if codec == "msgpack":
        return content
    return _encoder.encode(Ext(EXT_PICKLE, _encoder.encode(Pickled(type_name_, content))))


def wire_blob(ref: BlobRef) -> bytes:
    return _encoder.encode(Ext(EXT_BLOB, _encoder.encode(ref)))


def wire_file(staged: StagedFile) -> bytes:
    return _encoder.encode(Ext(EXT_FILE, _encoder.encode(staged)))


def blob_ref_for(codec: str, content: bytes, type_name_: str) -> BlobRef:
    return BlobRef(sha256=sha256_hex(content), size=len(content), codec=codec, type_name=type_name_)


def ext_code(wire: bytes) -> int | None:
    """The extension type of a wire value that is a msgpack extension at the top, else None."""
    if not wire:
        return None
    head = wire[0]
    if 0xD4 <= head <= 0xD8:  # fixext 1..16
        index = 1
    elif head in (0xC7, 0xC8, 0xC9):  # ext 8/16/32: then 1, 2 or 4 length bytes
        index = {0xC7: 2, 0xC8: 3, 0xC9: 5}[head]
    else:
        return None
    return wire[index] if len(wire) > index else None


def content_of(wire: bytes) -> tuple[str, bytes, str]:
    """(codec, content, type name) of an inline wire value: what a blob would store for it."""
    value = decode_opaque(wire)
    if isinstance(value, Ext):
        if value.code == EXT_PICKLE:
            pickled = _pickled.decode(value.data)
            return "pickle", pickled.data, pickled.type_name
        raise ValueError("a blob reference has no inline content")
    return "msgpack", bytes(wire), type_name(value)


def _opaque_hook(code: int, data: memoryview) -> Ext:
    return Ext(code, bytes(data))


_opaque = msgspec.msgpack.Decoder(ext_hook=_opaque_hook)
_raw_map = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])


def decode_opaque(wire: bytes | memoryview) -> Any:
    """Decode without unpickling: extensions stay `Ext` objects (for the head)."""
    return _opaque.decode(wire)


def missing_output(name: str, key: str, task_id: str, returned: list[str], limit: int = 20) -> str:
    """Why input `name` cannot be given: it reads output `key` of task `task_id`, which returned
    only the keys `returned` (sorted; a few shown). The controller's words, and a follower's node's
    (maze/workers/follow.py), for the same case."""
    shown = ", ".join(repr(k) for k in returned[:limit])
    more = f", … ({len(returned) - limit} more)" if len(returned) > limit else ""
    return f"input {name!r} refers to output {key!r} of task {task_id}, which returned only [{shown}{more}]"


def decode_map_raw(wire: bytes) -> dict[str, msgspec.Raw]:
    """A result or inputs map as {key: raw wire value}, without decoding the values."""
    return _raw_map.decode(wire)


def blob_ref(ext: Ext) -> BlobRef | None:
    return _blobref.decode(ext.data) if ext.code == EXT_BLOB else None


def blob_refs(wire_map: bytes) -> list[BlobRef]:
    """Every blob a `{key: wire value}` map refers to (extensions sit at the top of each value)."""
    refs = []
    for value in decode_opaque(wire_map).values():
        if isinstance(value, Ext) and value.code == EXT_BLOB:
            refs.append(_blobref.decode(value.data))
    return refs


def staged_files(wire_map: bytes) -> list[StagedFile]:
    """Every file input of a `{key: wire value}` inputs map (extensions sit at the top)."""
    return [
        _staged.decode(value.data)
        for value in decode_opaque(wire_map).values()
        if isinstance(value, Ext) and value.code == EXT_FILE
    ]


def staged_file(ext: Ext) -> StagedFile | None:
    return _staged.decode(ext.data) if ext.code == EXT_FILE else None


def check_staged_file(staged: StagedFile, where: str) -> StagedFile:
    """A file input from outside: a clean relative path, a sha256, a size. Raises ValidationError."""
    check_path(staged.path, f"{where}: file input")
    if not HEX64.fullmatch(staged.sha256) or staged.size < 0 or len(staged.source) > 4096:
        raise ValidationError(
            f"{where}: a file input needs a sha256 hex digest, a size >= 0 and a short source"
        )
    return staged


def check_wire(wire: bytes, where: str) -> Any:
    """Validate a wire value from outside (the API): well-formed msgpack, and any extension a
    well-formed pickle, blob reference or file input at the top. Returns the opaque value."""
    try:
        value = decode_opaque(wire)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"{where}: not a valid encoded value: {exc}") from exc
    if isinstance(value, Ext):
        try:
            if value.code == EXT_PICKLE:
                _pickled.decode(value.data)
            elif value.code == EXT_BLOB:
                ref = _blobref.decode(value.data)
                if len(ref.sha256) != 64 or ref.codec not in ("msgpack", "pickle"):
                    raise msgspec.ValidationError("bad blob reference")
            elif value.code == EXT_FILE:
                check_staged_file(_staged.decode(value.data), where)
            else:
                raise msgspec.ValidationError(f"unknown extension {value.code}")
        except msgspec.DecodeError as exc:
            raise ValidationError(f"{where}: malformed encoded value: {exc}") from exc
    elif _contains_ext(value):
        raise ValidationError(f"{where}: extensions may only appear at the top of a value")
    return value


def _contains_ext(value: Any) -> bool:
    if isinstance(value, Ext):
        return True
    if isinstance(value, list):
        return any(_contains_ext(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_ext(v) for v in value.values())
    return False


def describe(value: Any, with_data: bool = False) -> Any:
    """A JSON-ready view of an opaque value: plain values as they are, extensions as a descriptor
    `{"__maze_value__": "pickle"|"blob", "type", "size", ...}`. With `with_data`, an inline pickle
    carries its bytes (base64) so the SDK can rebuild it without another request."""
    if not isinstance(value, Ext):
        return value
    if value.code == EXT_PICKLE:
        pickled = _pickled.decode(value.data)
        out: dict[str, Any] = {MARKER: "pickle", "type": pickled.type_name, "size": len(pickled.data)}
        if with_data:
            out["data"] = base64.b64encode(pickled.data).decode()
        return out
    if value.code == EXT_BLOB:
        ref = _blobref.decode(value.data)
        return {
            MARKER: "blob",
            "type": ref.type_name,
            "size": ref.size,
            "codec": ref.codec,
            "sha256": ref.sha256,
            "uri": ref.uri,
        }
    if value.code == EXT_FILE:
        staged = _staged.decode(value.data)
        return {
            MARKER: "file",
            "path": staged.path,
            "size": staged.size,
            "sha256": staged.sha256,
            "uri": staged.uri,
            "source": staged.source,
        }
    return {MARKER: "unknown", "code": value.code, "size": len(memoryview(value.data))}


def describe_map(wire_map: bytes, with_data: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A result/inputs map described for JSON, and the keys whose values are descriptors."""
    described: dict[str, Any] = {}
    encoded: list[str] = []
    for key, value in decode_opaque(wire_map).items():
        if isinstance(value, Ext):
            encoded.append(key)
        described[key] = describe(value, with_data)
    return described, encoded


class ValueDecoder:
    """Turns wire values back into Python objects, given the blobs they refer to (already fetched
    and verified by the caller). Used in task processes and in the SDK, never in the head."""

    def __init__(self, blobs: Mapping[str, bytes] | None = None) -> None:
        self.blobs = blobs or {}
        self._decoder = msgspec.msgpack.Decoder(ext_hook=self._hook)

    def _hook(self, code: int, data: memoryview) -> Any:
        if code == EXT_PICKLE:
            return cloudpickle.loads(_pickled.decode(data).data)
        if code == EXT_BLOB:
            ref = _blobref.decode(data)
            content = self.blobs.get(ref.sha256)
            if content is None:
                raise KeyError(f"blob {ref.uri} was not fetched")
            return decode_content(ref.codec, content)
        if code == EXT_FILE:  # staged by the worker: the task gets its path in the attempt directory
            return _staged.decode(data).path
        raise ValueError(f"unknown value extension {code}")

    def decode(self, wire: bytes | memoryview) -> Any:
        return self._decoder.decode(wire)


def decode_content(codec: str, content: bytes) -> Any:
    if codec == "pickle":
        return cloudpickle.loads(content)
    return msgspec.msgpack.decode(content)


def from_descriptor(descriptor: dict[str, Any], fetch: Any) -> Any:
    """Rebuild a value from its JSON descriptor (SDK side). `fetch(sha256) -> bytes` returns a
    blob's verified content."""
    kind = descriptor.get(MARKER)
    if kind == "pickle":
        if "data" not in descriptor:
            # read models describe an inline pickle (type, size) without carrying its bytes
            raise ValidationError(
                f"this descriptor of a {descriptor.get('type', 'value')} carries no value (task rows "
                "only describe one): load it from the run's events (get_run_events) or get_results"
            )
        return cloudpickle.loads(base64.b64decode(descriptor["data"]))
    if kind == "blob":
        return decode_content(descriptor["codec"], fetch(descriptor["sha256"]))
    if kind == "file":  # a file input: what the task got, its path in the attempt directory
        return descriptor["path"]
    raise ValueError(f"cannot rebuild a value of kind {kind!r}")
