"""What a ReAct agent sees of a tool's result: the returned dict as plain data, compacted when
long. Pure: the same result always gives the same observation and the same blob.

The rule: a result whose JSON text (keys sorted) is longer than COMPACT_OVER_CHARS characters is
compacted. Each of its top-level values whose text (a string's own text, another value's JSON) is
longer than COMPACT_VALUE_CHARS is cut to its first KEEP_HEAD and last KEEP_TAIL characters around
a note naming how much was cut and where the whole is; if the result is still longer than twice
COMPACT_OVER_CHARS (many small values), it is shown as `{"compacted": <its JSON text cut the same
way>}`. The whole result, as that JSON text (UTF-8), is stored in the blob store: its sha256 is in
the note, in `observation["compacted"]` and in the `agent.compaction` event, and
`GET /artifacts/sha256/<hex>` returns it.

A value too large for an event (over the inline value limit, 256 KiB), which the worker stored as
a blob, is shown as a note naming it: `…[a value of N bytes, too large to show; it is
maze://artifacts/sha256/<hex>]…` (the built-in tools keep what they return under that limit:
maze/tasks/agent_tools.py). A pickled object is shown as its descriptor
(`{"__maze_value__": "pickle", "type", "size"}`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from msgspec import Struct
from msgspec.msgpack import Ext

from maze.events.values import MARKER, URI_PREFIX, decode_opaque, describe

COMPACT_OVER_CHARS = 4000
COMPACT_VALUE_CHARS = 1000
KEEP_HEAD = 600
KEEP_TAIL = 200


class Compaction(Struct, frozen=True):
    chars: int
    sha256: str
    keys: list[str]
    blob: bytes


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)


def plain_result(result: dict[str, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, wire in result.items():
        value = decode_opaque(wire)
        out[key] = _shown_ext(describe(value)) if isinstance(value, Ext) else value
    return out


def _shown_ext(described: Any) -> Any:
    if isinstance(described, dict) and described.get(MARKER) == "blob":
        return (
            f"…[a value of {described.get('size')} bytes, too large to show; "
            f"it is {URI_PREFIX}{described.get('sha256')}]…"
        )
    return described


def _cut(text: str, sha: str) -> str:
    cut = len(text) - KEEP_HEAD - KEEP_TAIL
    note = f"\n…[{cut} characters compacted; the whole result is {URI_PREFIX}{sha}]…\n"
    return text[:KEEP_HEAD] + note + text[-KEEP_TAIL:]


def observe(result: dict[str, bytes]) -> tuple[dict[str, Any], Compaction | None]:
    """The result as the agent sees it, and the compaction made (None: shown whole)."""
    shown = plain_result(result)
    text = json_text(shown)
    if len(text) <= COMPACT_OVER_CHARS:
        return shown, None
    blob = text.encode()
    sha = hashlib.sha256(blob).hexdigest()
    keys: list[str] = []
    for key in sorted(shown):
        value = shown[key]
        value_text = value if isinstance(value, str) else json_text(value)
        if len(value_text) > COMPACT_VALUE_CHARS:
            shown[key] = _cut(value_text, sha)
            keys.append(key)
    if len(json_text(shown)) > 2 * COMPACT_OVER_CHARS:
        shown, keys = {"compacted": _cut(text, sha)}, sorted(shown)
    return shown, Compaction(chars=len(text), sha256=sha, keys=keys, blob=blob)
