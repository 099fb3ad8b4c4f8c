"""What tasks print, as stored in the `MAZE_LOGS` stream: one message per batch of lines of one task
on one node (subject `maze.log.<run>.<node>.<task>`, maze/events/subjects.py).

A batch carries only what the subject does not: the run, node and task come from the subject, so a
worker (whose NATS user may write only its own node's subjects) cannot write lines attributed to
another node. A line's place in history is its cursor: the batch's stream sequence and the line's
index in it, as one number (`seq * CURSOR_SPAN + index`), which only grows.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct

from maze.events import subjects

# A batch holds fewer lines than this (maze/workers/log_shipper.py bounds it), so that the cursor
# of a line is one integer
CURSOR_SPAN = 1_000_000
Stream = Literal["stdout", "stderr", "maze"]  # "maze": Maze's own note (the cap's marker)


class LogLine(Struct, frozen=True, array_like=True):
    """One line (without its line break), or one piece of a line longer than the worker's line
    limit. `at_ms`: when the worker read it."""

    attempt: int
    stream: Stream
    at_ms: int
    text: str


class LogBatch(Struct, frozen=True, tag="log.batch", tag_field="type"):
    lines: list[LogLine]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LogBatch)


def encode_batch(lines: list[LogLine]) -> bytes:
    return _encoder.encode(LogBatch(lines=lines))


def decode_batch(data: bytes) -> list[LogLine] | None:
    """The batch's lines; None for a message that is no batch (a reader skips it)."""
    try:
        return _decoder.decode(data).lines
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def cursor(seq: int, index: int) -> int:
    return seq * CURSOR_SPAN + index


def split_cursor(value: int) -> tuple[int, int]:
    """(stream sequence, index in its batch) of a cursor."""
    return divmod(value, CURSOR_SPAN)


def shown_lines(subject: str, seq: int, data: bytes, after: int = -1) -> list[dict[str, Any]]:
    """The lines of one stored batch as the API shows them, those with a cursor above `after`. The
    run, node and task are the subject's; a message on a subject that is not a log subject, or that
    does not decode, shows nothing."""
    origin = subjects.log_origin(subject)
    lines = decode_batch(data) if origin is not None else None
    if not lines or origin is None:
        return []
    _, node_id, task_id = origin
    base = cursor(seq, 0)
    return [
        {
            "cursor": base + i,
            "task_id": task_id,
            "attempt": line.attempt,
            "node_id": node_id,
            "stream": line.stream,
            "at_ms": line.at_ms,
            "line": line.text,
        }
        for i, line in enumerate(lines)
        if base + i > after
    ]
