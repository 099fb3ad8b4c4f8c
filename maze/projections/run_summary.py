"""What the fold records on a run's row for history: the names a text search looks in, and the
result summary of a finished run. Pure functions of the run's events (no clock, no I/O), so a
rebuild from the log gives the same strings.

Names. A run has no name of its own: what users call it is its workflow id (the SDK's
`wf_<hex>`, or whatever a submission gave) and the names of its tasks and their functions. The
`names` column holds those, lowercased with runs of whitespace made one space, one per line: the
workflow id, then each distinct task or function name in sorted order, up to NAMES_MAX_CHARS (a run
of 100,000 distinct task names is searchable by the first few hundred of them, alphabetically).
One short column per run keeps a text filter over 100,000 runs one scan of a few MB.

Result summary. The outputs of the run's final (sink) tasks, those no other task depends on, in
submission order: at most SUMMARY_TASKS tasks and SUMMARY_KEYS outputs each; an output whose JSON is
longer than SUMMARY_VALUE_CHARS characters shows as a `truncated` descriptor with its type, size
and first characters; a value stored as a blob or a pickle shows as its descriptor, never fetched.
Made once, when the run finishes.
"""

from __future__ import annotations

import heapq
import json
import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from maze.events.specs import TaskSpec
from maze.events.values import MARKER

if TYPE_CHECKING:
    from maze.projections.rows import RunRow, TaskRow

_decode_json = msgspec.json.decode  # the fold's own strict JSON text (json_text.py `dumps`)
_index = operator.attrgetter("task_index")

NAMES_MAX_CHARS = 4096
SUMMARY_TASKS = 10
SUMMARY_KEYS = 20
SUMMARY_VALUE_CHARS = 200
_NO_UPSTREAM = "[]"


def searchable(text: str) -> str:
    """A name (or a search term) as the `names` column holds it: lowercased, runs of whitespace
    (newlines included) made one space, no leading or trailing space."""
    return " ".join(text.lower().split())


def add_names(run: RunRow, specs: Iterable[TaskSpec]) -> None:
    """Extend the run's `names` with the task and function names of one chunk of its tasks. The
    result does not depend on the order chunks are folded in: the workflow id, then the distinct
    names sorted, as many as fit (a name that fits in a longer list fits in a shorter one)."""
    workflow, _, rest = run.names.partition("\n")
    names = set(rest.split("\n")) if rest else set()
    tried: set[str] = set()  # raw names already looked at: most tasks share their function's name
    for spec in specs:
        for raw in (spec.name, spec.func_name):
            if raw not in tried:
                tried.add(raw)
                names.add(searchable(raw))
    names.discard("")
    kept = [workflow]
    size = len(workflow)
    for name in sorted(names):
        if size >= NAMES_MAX_CHARS:
            break
        kept.append(name)
        size += len(name) + 1
    run.names = "\n".join(kept)


def _brief(value: Any) -> tuple[Any, bool]:
    """An output value as the summary shows it, and whether it was cut."""
    if value is None or isinstance(value, bool | int | float):
        return value, False
    if isinstance(value, dict) and MARKER in value:
        return value, False  # a blob or pickle descriptor: small, and what the client loads from
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) <= SUMMARY_VALUE_CHARS:
        return value, False
    kind = type(value).__name__  # JSON's types: str, list, dict (numbers and bools are short)
    return {MARKER: "truncated", "type": kind, "size": len(text), "preview": text[:SUMMARY_VALUE_CHARS]}, True


def result_summary(tasks: dict[str, TaskRow]) -> dict[str, Any]:
    """The run's final tasks and their outputs, briefly (the rules are in the module docstring)."""
    feeding: set[str] = set()
    for task in tasks.values():
        if task.upstream != _NO_UPSTREAM:
            feeding.update(_decode_json(task.upstream))
    sinks = [t for t in tasks.values() if t.task_id not in feeding]
    shown = (
        sorted(sinks, key=_index)
        if len(sinks) <= SUMMARY_TASKS
        else heapq.nsmallest(SUMMARY_TASKS, sinks, key=_index)
    )
    truncated = len(sinks) > len(shown)
    listed = []
    for task in shown:
        outputs: dict[str, Any] | None = None
        if task.state == "succeeded" and task.result is not None:
            values = _decode_json(task.result)
            outputs = {}
            if isinstance(values, dict):
                for key in sorted(values)[:SUMMARY_KEYS]:
                    outputs[key], cut = _brief(values[key])
                    truncated = truncated or cut
                truncated = truncated or len(values) > SUMMARY_KEYS
        listed.append({"task_id": task.task_id, "name": task.name, "state": task.state, "outputs": outputs})
    return {"sink_tasks": len(sinks), "tasks": listed, "truncated": truncated}
