"""The JSON text of a read-model row's JSON columns (results, inputs, errors, summaries).

msgspec's encoder, keys sorted (so equal values give equal text, whichever order a dict was made
in), compact, UTF-8. It replaced `json.dumps(sort_keys=True)` (~1-2 us a value against ~0.1-0.3:
5% of a rebuild, bench/history.py). Every text is a function of the value alone (the live fold and
a rebuild write the same): a value JSON has no form for is written as a descriptor, never its
`repr` (which may hold a memory address): an extension value (a pickle, a blob, a file:
`describe`), anything else `{"__maze_value__": "unknown", "type"}`. Dict keys that are not strings
are made strings as JSON makes them (`1`, `1.5`, `true`, `null`; others their JSON text); one that
would then repeat a string key of the same dict is written with its type after it (`"1 (int)"`),
so no value is dropped. NaN and the infinities are written `null`: every text is strict JSON.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from maze.events.values import MARKER, describe


def _described(value: Any) -> Any:
    if isinstance(value, msgspec.msgpack.Ext):
        try:
            return describe(value)
        except (msgspec.DecodeError, ValueError):  # its content is not what its code says
            return {MARKER: "unknown", "code": value.code, "size": len(memoryview(value.data))}
    kind = type(value)
    return {MARKER: "unknown", "type": f"{kind.__module__}.{kind.__qualname__}"}


_encode_sorted = msgspec.json.Encoder(order="sorted", enc_hook=_described).encode


def dumps(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return _encode_sorted(value).decode()
    except TypeError:  # keys other than strings
        return _encode_sorted(_json_keys(msgspec.to_builtins(value, enc_hook=_described))).decode()


def _json_keys(value: Any) -> Any:
    """`value` with every dict key a string (the rules above)."""
    if isinstance(value, dict):
        out = {k: _json_keys(v) for k, v in value.items() if isinstance(k, str)}
        for key, item in value.items():
            if not isinstance(key, str):
                text = _json_key(key)
                out[f"{text} ({type(key).__name__})" if text in out else text] = _json_keys(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_keys(v) for v in value]
    return value


def _json_key(key: Any) -> str:
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return dumps(key) or "null"
