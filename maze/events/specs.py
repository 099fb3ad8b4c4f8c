"""Data shapes carried inside events: task specs, resources, errors, node capacity.

These are plain data (frozen msgspec Structs). They never change meaning: a new field always
has a default so that every event ever stored still decodes.

The shapes a run holds by the hundred thousand (task specs, their inputs, resources, retry
policies) are `gc=False`: they can never be part of a reference cycle, and left tracked, the cyclic
GC walks every task of every active run again and again (it made the controller's CPU per event of
a 100,000-task run ~1.5x that of a small run; ~1.15x untracked, bench/controller_cost.py). Their
sequences are tuples, not lists: the GC never untracks a list, so two lists per task (`after`,
`outputs`) kept 300,000 objects of a 100,000-task run tracked, and each full collection took
~120 ms, a stall of the event loop the API shares (the GC untracks a tuple of strings).
"""

from __future__ import annotations

from collections.abc import Iterator

from msgspec import Struct


class Resources(Struct, frozen=True, gc=False):
    """What one attempt of a task reserves on a node.

    `cpu` and `gpu` may be fractional; `gpu_mem` is MB per card; `cpu_mem` is MB.
    `sandbox`: the attempt runs only on a node that can sandbox it (bubblewrap,
    maze/workers/sandbox.py), never without; `network`: a sandboxed attempt may use the network
    (it has none otherwise; an attempt outside a sandbox always has it).
    """

    cpu: float = 1.0
    cpu_mem: int = 0
    gpu: float = 0.0
    gpu_mem: int = 0
    sandbox: bool = False
    network: bool = False


class InputRef(Struct, frozen=True, tag="ref", gc=False):
    """An input wired to another task's output: `<task_id>.output.<key>`."""

    task_id: str
    key: str


class InputValue(Struct, frozen=True, tag="value", gc=False):
    """A literal input, msgpack-encoded."""

    data: bytes


class InputGather(Struct, frozen=True, tag="gather", gc=False):
    """A list or dict input whose items are other tasks' outputs (or literal values, or more of the
    same), e.g. a fan-in `inputs={"parts": [t.outputs["s"] for t in ts]}`: the task gets the list,
    or the dict, of their values, in the same shape. Each reference is an edge of the DAG.
    `keys` is None for a list; for a dict, its keys in the order of `items`."""

    items: tuple[InputRef | InputValue | InputGather, ...]
    keys: tuple[str | int, ...] | None = None


Input = InputRef | InputValue | InputGather


def gathered_refs(gather: InputGather) -> Iterator[InputRef]:
    """Every reference inside a gathered input, depth first."""
    for item in gather.items:
        if isinstance(item, InputRef):
            yield item
        elif isinstance(item, InputGather):
            yield from gathered_refs(item)


def input_refs(given: Input) -> Iterator[InputRef]:
    """The references an input reads: itself, the ones inside it, or none."""
    if isinstance(given, InputRef):
        yield given
    elif isinstance(given, InputGather):
        yield from gathered_refs(given)


class RetryPolicy(Struct, frozen=True, gc=False):
    max_retries: int = 0
    backoff_seconds: float = 0.0
    retry_on: tuple[str, ...] = ()


class TaskSpec(Struct, frozen=True, gc=False):
    """One task of a run, exactly as submitted."""

    task_id: str
    name: str
    func_name: str
    func_hash: str
    call_style: str  # "kwargs": f(**inputs); "params": f(inputs_dict)
    inputs: dict[str, Input]
    outputs: tuple[str, ...] | None  # None: not declared, checked at run time
    resources: Resources = Resources()
    timeout_seconds: float | None = None
    retry: RetryPolicy = RetryPolicy()
    task_type: str = "code"
    after: tuple[str, ...] = ()  # explicit ordering edges (add_edge) without data flow
    # A retry of only the failed tasks (`failed_only`): the result this task recorded in the run
    # retried (its `attempt.succeeded` result map, as stored). It does not run again: the run
    # starts with it succeeded.
    carried: bytes | None = None
    # in a run with files: the patterns (maze/core/globs.py) naming which of the files an attempt
    # made are registered as artifacts; None: all of them (an app's `artifacts:` in maze.yaml)
    artifacts: tuple[str, ...] | None = None

    def upstream(self) -> set[str]:
        deps = set(self.after)
        for given in self.inputs.values():
            if isinstance(given, InputRef):
                deps.add(given.task_id)
            elif isinstance(given, InputGather):
                deps.update(ref.task_id for ref in gathered_refs(given))
        return deps


class TaskError(Struct, frozen=True):
    """The structured error envelope every failure carries (DESIGN.md §5)."""

    error_type: str
    message: str
    retryable: bool = False
    origin: str = "task"
    node_id: str | None = None
    node_ip: str | None = None
    attempt: int = 0
    traceback: str | None = None
    exception_type: str | None = None


class GpuInfo(Struct, frozen=True):
    index: int
    name: str
    total_mem_mb: int
    free_mem_mb: int
    uuid: str = ""


class NodeCapacity(Struct, frozen=True):
    cpus: float
    memory_mb: int
    gpus: list[GpuInfo] = []
    # whether the node runs sandboxed attempts (bubblewrap ran at its start), and how their memory
    # and process count are bounded there: "cgroup2", "cgroup1" or "rlimit"; else why it cannot
    sandbox: bool = False
    sandbox_limits: str = ""
    # whether its sandboxes can be given outbound network (slirp4netns installed: network=True)
    sandbox_network: bool = False
