"""Who may write what. The head writes on `maze.run.<run>` and `maze.node.<node>.head`; a worker
only on `maze.run.<run>.<its node>` and `maze.node.<its node>` (its NATS account imports nothing
else: maze/head/nats_auth.py). On its subject of a run only its reports on that run's attempts it ran stand
(`attempt.started|succeeded|failed|rejected` and `artifact.registered` naming that run and its own
node); on its node subject only its own sessions (`node.joined|left|lost` naming its own node). Anything else a worker's subject
carries (a run created, a decision, another node's report or session) is refused by every reader
of the log, the controller's fold, the read models and the history the API shows alike, and
counted: a worker's credentials cannot create runs or decide.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec

from maze.events.artifacts import ArtifactRegistered
from maze.events.catalog import Event
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.tasks import AttemptFailed, AttemptRejected, AttemptStarted, AttemptSucceeded

# a node's reports on the attempts placed on it (the files an attempt made are its report too)
REPORTS = (AttemptStarted, AttemptSucceeded, AttemptFailed, AttemptRejected, ArtifactRegistered)
# what a worker may say about its own node on `maze.node.<node>` (a node's own `node.lost`: older
# heads wrote those there; a worker saying it of itself harms none but itself)
SESSIONS = (NodeJoined, NodeLeft, NodeLost)


# the read models keep integers as BIGINT: a node's report with a larger one (a pid, a size, a
# time) could be stored by no fold alike, so every reader refuses it
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _ints_in_range(event: Event) -> bool:
    for path in int_paths(type(event)):
        value: Any = event
        for name in path:
            value = getattr(value, name, None)
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            return False
    return True


_int_paths: dict[type, tuple[tuple[str, ...], ...]] = {}


def int_paths(cls: type) -> tuple[tuple[str, ...], ...]:
    """Where an event of type `cls` can hold an integer: each field that can, and each such field
    of a struct it holds (a node's `capacity.memory_mb`), as a path of names. Only these are
    checked: a decoded event's values are of its fields' types (`astuple` of every field was ~1 us
    an event, and missed the nested ones)."""
    found = _int_paths.get(cls)
    if found is None:
        found = _int_paths[cls] = tuple(_paths(cls, ()))
    return found


def _paths(cls: type, seen: tuple[type, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for field in msgspec.structs.fields(cls):
        if may_hold_int(field.type):
            out.append((field.name,))
        for inner in _structs_in(field.type):
            if inner not in seen and inner is not cls:
                out += [(field.name, *rest) for rest in _paths(inner, (*seen, cls))]
    return out


def may_hold_int(tp: Any) -> bool:
    """Whether a field of type `tp` can hold an integer itself (not inside a container)."""
    return any(_holds_int(member) for member in _members(tp))


def _holds_int(tp: Any) -> bool:
    if tp is Any or tp is object:
        return True
    if isinstance(tp, type):
        return issubclass(tp, int) and tp is not bool  # a bool is always in range
    return typing.get_origin(tp) is typing.Literal and any(isinstance(a, int) for a in typing.get_args(tp))


def _structs_in(tp: Any) -> list[type]:
    """The struct types a field of type `tp` holds itself (not inside a container)."""
    return [m for m in _members(tp) if isinstance(m, type) and issubclass(m, msgspec.Struct)]


def _members(tp: Any) -> list[Any]:
    """The types a field of type `tp` may hold itself: `tp`, or an Annotated's type, or each of a
    union's."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def admissible(event: Event, reporter: str | None, subject_run: str | None = None) -> bool:
    """Whether an event read from a subject `reporter` wrote (None: the head's) stands.
    `subject_run`: the run of the worker's subject it was on (`maze.run.<run>.<node>`); None for its
    node subject (`maze.node.<node>`). Each event is where every reader looks for it: a session
    on a run's subject, or a report on another run's, is refused (the rebuild's shards are chosen
    by a message's subject, maze/projections/shards.py)."""
    if reporter is None:
        return True
    if not _ints_in_range(event):
        return False
    if subject_run is None:
        return isinstance(event, SESSIONS) and event.node_id == reporter
    if not isinstance(event, REPORTS) or event.node_id != reporter or event.run_id != subject_run:
        return False
    # a failure a worker reports is its own (epoch 0, origin not the controller's): one stamped with
    # an epoch, or claiming the controller decided it, is a decision
    return not (isinstance(event, AttemptFailed) and (event.epoch or event.error.origin == "controller"))


def split_admissible(
    events: list[Event], reporter: str | None, subject_run: str | None = None
) -> tuple[list[Event], list[Event]]:
    """(the events that stand, the ones refused)."""
    if reporter is None:
        return events, []
    kept: list[Event] = []
    refused: list[Event] = []
    for event in events:  # each judged once: every reader of the log does this for every report
        (kept if admissible(event, reporter, subject_run) else refused).append(event)
    return kept, refused
