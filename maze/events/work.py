"""Work items: what the placer sends to one node's work subject (`maze.work.<node_id>`).

Work messages are transport, not history: the run stream records placement, start and result.
"""

from __future__ import annotations

from msgspec import Struct

from maze.events.artifacts import FileEntry
from maze.events.specs import Resources


class WorkItem(Struct, frozen=True):
    run_id: str
    task_id: str
    attempt: int
    func_name: str
    func_hash: str  # the code, in the blob store under this sha256
    call_style: str
    inputs: bytes  # {name: wire value} (maze.events.values), blob references included
    outputs: tuple[str, ...] | None
    resources: Resources
    gpus: list[int] = []
    timeout_seconds: float | None = None
    session: str = ""  # the node session it was placed on
    # the leadership that placed it (its `attempt.placed`'s epoch): a node that took this attempt's
    # work from an older one (a deposed leader's placement, refused by every fold) takes this anew
    epoch: int = 0
    func: bytes = b""  # older controllers sent the code inline; fetched by func_hash when empty
    # gathered inputs (lists or dicts of other tasks' outputs): input name -> the msgpack template
    # its slots in `inputs` fill (maze/events/gather.py)
    gathers: dict[str, bytes] = {}
    # a run with files (maze/events/artifacts.py): the workspace manifest's sha256 ("": none), and
    # the artifacts of the task's upstream tasks laid over it, as the controller folded them
    workspace: str = ""
    files: list[FileEntry] = []
    # which of its new or changed files are registered (maze/core/globs.py); None: all of them
    artifacts: tuple[str, ...] | None = None
    # A follower (maze/head/followers.py): placed with its one upstream task still to succeed, on
    # that task's node, to run in its slot once attempt `after_attempt` of task `after` succeeded
    # here and that success is stored. `after_inputs`: input name -> the upstream's output key
    # (those inputs are not in `inputs`: the node fills them from the upstream's result).
    after: str = ""
    after_attempt: int = 0
    after_inputs: dict[str, str] = {}
    leads: bool = False  # a follower was placed after it (its node keeps its success a while)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.run_id, self.task_id, self.attempt)


class CancelRun(Struct, frozen=True):
    """The controller's word to a node that a run ended (cancelled, timed out) while attempts of it
    were placed there: the node kills those it runs (their whole process groups), drops those
    waiting, and starts none of the run's work that comes later. Sent on the node's work
    subject, in order with its work, after the run's end is recorded (the log says the attempts
    ended: this only makes it true on the node)."""

    run_id: str
    reason: str = ""
    # only the followers the node holds for the run, which will not run (the run failed: what
    # runs or waits there goes on as it would; maze/head/followers.py)
    held_only: bool = False


class WorkBatch(Struct, frozen=True):
    items: list[WorkItem]
    cancels: list[CancelRun] = []  # runs whose attempts on this node end now (older workers ignore)
    # sessions of this node the head declared lost (recorded as node.lost): the worker of such a
    # session registers a new one. Told here, on the node's work subject that its worker pulls
    lost_sessions: list[str] = []
