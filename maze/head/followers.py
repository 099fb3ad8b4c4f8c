"""Followers: a task placed together with its one upstream task still to run, on that task's
node, to run in its slot as soon as that task succeeds there (a chain then flows on one node with
no round trip to the head per edge).

The rule, which every fold reads from the log alone:
- A follower's `attempt.placed` comes while the task still waits for its upstream task (`waiting`
  is 1): its task is `queued` on the node, and it holds nothing there (its reservation is empty:
  the upstream's holds the slot).
- When the upstream task succeeds, the follower is in force: its reservation becomes its own
  resources (never more than the upstream's, so the node is not over-committed), and the
  delivery check watches it like any placed attempt.
- When the upstream's attempt ends otherwise (failed, or lost with its node), the follower is
  stale: the controller records it lost (`attempt.lost`, no failure, no requeue counted) when it
  places the upstream task again, and places a follower anew with it. A run that fails records
  every follower still waiting lost first, and tells its node to drop it; a cancelled or timed
  out run ends its followers as it ends every queued attempt.

The node runs a follower as soon as its upstream answers, but sends what the follower reports
only once the upstream's success is stored as it is (maze/workers/follow.py), so its reports
never precede that success in the log.

Only a plain chain link follows: a static run without files, a code task that is its upstream's
only downstream task, waits for nothing else, asks no GPU, no sandbox and no more CPU or memory
than the upstream, and does not gather the upstream's outputs into a list or dict.
"""

from __future__ import annotations

import msgspec

from maze.events.specs import InputGather, InputRef, Resources, TaskError, TaskSpec, gathered_refs
from maze.head.run_state import RunRuntime, TaskRuntime, resolve_inputs

MAX_FOLLOWERS = 128  # followers placed with one task: a longer chain is placed again from there
NOTHING = Resources(cpu=0.0)  # what a follower holds while its upstream runs


def follower_of(run: RunRuntime, up: TaskRuntime) -> TaskRuntime | None:
    """The task that may follow `up` on its node (None: none may)."""
    if run.dynamic or run.agent is not None or run.workspace or len(up.downstream) != 1:
        return None
    down = run.tasks[up.downstream[0]]
    if down.waiting != 1 or not (down.state == "pending" or stale(down)):
        return None
    spec, over = down.spec, up.spec
    if spec.task_type != "code" or over.task_type != "code" or spec.carried is not None:
        return None
    if not fits_within(spec.resources, over.resources):
        return None
    for given in spec.inputs.values():
        if isinstance(given, InputGather) and any(r.task_id == over.task_id for r in gathered_refs(given)):
            return None
    return down


def fits_within(req: Resources, held: Resources) -> bool:
    return (
        not req.gpu
        and not held.gpu
        and not req.sandbox
        and not held.sandbox
        and req.cpu <= held.cpu
        and req.cpu_mem <= held.cpu_mem
    )


def stale(task: TaskRuntime) -> bool:
    """A follower placed after an attempt of its upstream that did not succeed: queued while it
    still waits (a follower in force waits for nothing)."""
    return task.state == "queued" and task.waiting > 0


def follower_inputs(
    run: RunRuntime, spec: TaskSpec, up_id: str
) -> tuple[dict[str, msgspec.Raw], dict[str, str]] | TaskError:
    """A follower's inputs but those its upstream `up_id` gives (input name -> that task's output
    key, filled on the node from its result)."""
    fill = {
        name: given.key
        for name, given in spec.inputs.items()
        if isinstance(given, InputRef) and given.task_id == up_id
    }
    rest = msgspec.structs.replace(spec, inputs={n: g for n, g in spec.inputs.items() if n not in fill})
    values = resolve_inputs(run, rest)
    if isinstance(values, TaskError):
        return values
    return values, fill
