"""Who may write what in the runs stream. The head writes on `maze.run.<run>`; a worker only on
`maze.run.<run>.<its node>` (NATS permissions see to that, maze/head/nats_auth.py), and there only
its reports on attempts it ran: `attempt.started|succeeded|failed|rejected` naming its own node. An
event on a worker's subject that is anything else (a run created, a decision, another node's
report) is refused by every reader of the log, the controller's fold, the read models and the
history the API shows alike, and counted: a worker's credentials cannot create runs or decide.
"""

from __future__ import annotations

from maze.events.catalog import Event
from maze.events.tasks import AttemptFailed, AttemptRejected, AttemptStarted, AttemptSucceeded

REPORTS = (AttemptStarted, AttemptSucceeded, AttemptFailed, AttemptRejected)


def admissible(event: Event, reporter: str | None) -> bool:
    """Whether an event read from a subject `reporter` wrote (None: the head's) stands."""
    if reporter is None:
        return True
    if not isinstance(event, REPORTS) or event.node_id != reporter:
        return False
    # a failure a worker reports is its own (epoch 0, origin not the controller's): one stamped with
    # an epoch, or claiming the controller decided it, is a decision
    return not (isinstance(event, AttemptFailed) and (event.epoch or event.error.origin == "controller"))


def split_admissible(events: list[Event], reporter: str | None) -> tuple[list[Event], list[Event]]:
    """(the events that stand, the ones refused)."""
    if reporter is None:
        return events, []
    kept = [e for e in events if admissible(e, reporter)]
    return kept, [e for e in events if not admissible(e, reporter)]
