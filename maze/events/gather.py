"""Gathered inputs on the way to a task: a list or dict input holding other tasks' outputs
(`InputGather`, maze/events/specs.py), taken apart by the controller and put back together in the
task process.

Every wire value of a work item stays at the top of its inputs map (maze/events/values.py: blob
references are found one level down, large values are moved to the blob store one key at a time),
so a gathered input travels flat: each of its items is a *slot* of the inputs map, named
`<input>\\x00<n>`, and the work item's `gathers` maps the input's name to a *template*: the same
list or dict shape (msgpack), with each item replaced by the name of its slot. The task process
decodes the slots as any input, fills the template, and hands the function the value under the
input's own name; the slots are gone by then.

Kept import-light: the task process imports it (maze/workers/child.py).
"""

from __future__ import annotations

from typing import Any

import msgspec

from maze.events.specs import InputGather, InputRef, InputValue

SLOT_MARK = "\x00"
_encoder = msgspec.msgpack.Encoder()

Leaf = InputRef | InputValue


def slot_name(input_name: str, index: int) -> str:
    return f"{input_name}{SLOT_MARK}{index}"


def shown_name(key: str) -> str:
    """A slot as people read it: `parts[3]` (an input's own name as it is)."""
    name, mark, index = key.partition(SLOT_MARK)
    return f"{name}[{index}]" if mark else key


def flatten(input_name: str, gather: InputGather) -> tuple[Any, list[tuple[str, Leaf]]]:
    """The template of a gathered input and its slots, (slot name, leaf) depth first."""
    slots: list[tuple[str, Leaf]] = []

    def walk(node: InputGather) -> Any:
        filled = []
        for item in node.items:
            if isinstance(item, InputGather):
                filled.append(walk(item))
            else:
                name = slot_name(input_name, len(slots))
                slots.append((name, item))
                filled.append(name)
        if node.keys is None:
            return filled
        return dict(zip(node.keys, filled, strict=True))

    return walk(gather), slots


def templates(inputs: dict[str, Any]) -> dict[str, bytes]:
    """The encoded template of each gathered input of a task spec's `inputs` ({} when none)."""
    out: dict[str, bytes] = {}
    for name, given in inputs.items():
        if isinstance(given, InputGather):
            out[name] = _encoder.encode(flatten(name, given)[0])
    return out


def assemble(gathers: dict[str, bytes], values: dict[str, Any]) -> dict[str, Any]:
    """The task's inputs with each gathered input put back together from its slots (in `values`,
    decoded) in its template's shape; the slots themselves are taken out."""
    if not gathers:
        return values

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return values.pop(node)
        if isinstance(node, list):
            return [fill(item) for item in node]
        return {key: fill(item) for key, item in node.items()}

    filled = {name: fill(msgspec.msgpack.decode(template)) for name, template in gathers.items()}
    values.update(filled)
    return values
