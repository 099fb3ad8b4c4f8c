"""The run controller's CPU cost per event, by run size: does it stay flat (DESIGN.md §6.8)?

    python bench/controller_cost.py [--big 100000] [--small 100] [--nodes 1]

Drives the controller's pure core (maze/head/scheduler.py) without NATS: a run is recorded (as one
run.created, or as run.created + tasks.added chunks cut as the API cuts them), then a simulated
worker answers every placed attempt with attempt.started + attempt.succeeded until the run ends.
What is timed (`time.process_time`) is what the controller does per event: decoding the event
messages, folding them, deciding, encoding its decisions and folding them when they come back from
the log, and encoding the work into byte-bounded batches. Building the
simulated worker's events is not timed.

Reports CPU µs per event (every event the controller folds: the run's, its own decisions and the
worker's) for each shape and size, and the ratio of the big run's cost to the small run's; the same
once the run is built (folding its recording is O(run), once, and is shown per task); the least of
several runs of each, small and big taken in turns, as other processes share the CPU and caches.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import msgspec
from rich.console import Console
from rich.table import Table

from maze.api.run_writer import chunk_events
from maze.events.catalog import Event
from maze.events.codec import decode_events, encode_events
from maze.events.nodes import NodeJoined
from maze.events.runs import RunCreated
from maze.events.specs import InputRef, InputValue, NodeCapacity, TaskSpec
from maze.events.store import group_by_run
from maze.events.tasks import AttemptStarted, AttemptSucceeded
from maze.head.dispatch import batch_payload, encode_item, pack_batches
from maze.head.scheduler import Scheduler

BUDGET = 1024 * 1024 - 16 * 1024  # a default nats-server's max_payload, less headroom
FUNC = "f" * 64
RESULT = msgspec.msgpack.encode({"x": 1})


def spec(task_id: str, ups: list[str] = ()) -> TaskSpec:  # type: ignore[assignment]
    inputs: dict[str, InputRef | InputValue] = {
        f"in{i}": InputRef(task_id=u, key="x") for i, u in enumerate(ups)
    }
    if not ups:
        inputs["x"] = InputValue(data=msgspec.msgpack.encode(1))
    return TaskSpec(
        task_id=task_id,
        name="noop",
        func_name="noop",
        func_hash=FUNC,
        call_style="kwargs",
        inputs=inputs,
        outputs=["x"],
    )


def flat(n: int) -> list[TaskSpec]:
    return [spec(f"t{i}") for i in range(n)]


def chain(n: int) -> list[TaskSpec]:
    return [spec(f"t{i}", [f"t{i - 1}"] if i else []) for i in range(n)]


def diamonds(n: int) -> list[TaskSpec]:
    """Diamonds of four in a row: a -> (b, c) -> d -> next a."""
    out: list[TaskSpec] = []
    prev: list[str] = []
    for d in range(n // 4):
        a, b, c, e = (f"d{d}{k}" for k in "abce")
        out += [spec(a, prev), spec(b, [a]), spec(c, [a]), spec(e, [b, c])]
        prev = [e]
    return out


def recorded(run_id: str, specs: list[TaskSpec], chunked: bool) -> list[bytes]:
    """The run's event messages as the API records them."""
    if chunked:
        return [encode_events([e]) for e in chunk_events(run_id, "wf", specs, 1, BUDGET)]
    return [encode_events([RunCreated(run_id=run_id, workflow_id="wf", at_ms=1, tasks=specs)])]


class Cost(msgspec.Struct):
    cpu: float  # controller CPU seconds, the whole run
    events: int  # events folded, the whole run
    build: float  # CPU seconds of folding the run's recording (decode, build the graph)
    build_events: int

    @property
    def per_event_us(self) -> float:
        return self.cpu / self.events * 1e6

    @property
    def steady_us(self) -> float:
        """Per event once the run is built: placements, starts, results, the end."""
        return (self.cpu - self.build) / (self.events - self.build_events) * 1e6


def measure(specs: list[TaskSpec], chunked: bool, nodes: int) -> Cost:
    """The controller's CPU for one run from submission to its end."""
    core = Scheduler(queue_factor=16.0)
    for n in range(nodes):
        capacity = NodeCapacity(cpus=4, memory_mb=16_000)
        core.apply(
            NodeJoined(node_id=f"n{n}", session="s", at_ms=0, hostname="h", ip="127.0.0.1", capacity=capacity)
        )
    run_id = "run"
    messages = recorded(run_id, specs, chunked)
    events = 0
    now = 1_000
    start = time.process_time()
    for data in messages:
        for event in decode_events(data):
            core.apply(event)
            events += 1
    cpu = time.process_time() - start
    build, build_events = cpu, events
    while run_id not in core.done_runs:
        now += 1
        start = time.process_time()
        decision = core.decide(now)
        for items in decision.work.values():
            encoded = [encode_item(i) for i in items]
            for part in pack_batches([len(e) for e in encoded], BUDGET):
                batch_payload([encoded[i] for i in part])
        # the decision takes effect when it comes back from the log: published, then folded
        for data in [encode_events(evs) for evs in group_by_run(decision.events).values()]:
            for event in decode_events(data):
                core.apply(event)
        cpu += time.process_time() - start
        events += len(decision.events)
        # the simulated worker: every placed attempt starts and succeeds; one message per run
        answers: list[Event] = []
        for node_id, items in decision.work.items():
            for item in items:
                key = {
                    "run_id": item.run_id,
                    "task_id": item.task_id,
                    "attempt": item.attempt,
                    "node_id": node_id,
                }
                answers += [
                    AttemptStarted(**key, at_ms=now),
                    AttemptSucceeded(**key, at_ms=now, result=RESULT),
                ]
        if not answers and not decision.events:
            raise RuntimeError("the run made no progress")
        wire = [encode_events(evs) for evs in group_by_run(answers).values()]
        start = time.process_time()
        for data in wire:
            for event in decode_events(data):
                core.apply(event)
                events += 1
        cpu += time.process_time() - start
    return Cost(cpu=cpu, events=events, build=build, build_events=build_events)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--mid", type=int, default=10_000, help="size of the chain and diamond runs")
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[int], list[TaskSpec]], bool, int]] = [
        ("flat fan-out, one run.created", flat, False, args.big),
        ("flat fan-out, run.created + tasks.added chunks", flat, True, args.big),
        ("chain", chain, False, args.mid),
        ("diamonds (a -> b, c -> d, chained)", diamonds, False, args.mid),
    ]
    table = Table(title=f"controller CPU per event, {args.nodes} node(s) of 4 CPUs, queue factor 16")
    columns = [
        "run shape",
        "tasks (events)",
        "µs/event",
        "big/small",
        "µs/event once built",
        "big/small",
        "build µs/task",
    ]
    for column in columns:
        table.add_column(column, justify="left" if column == "run shape" else "right")
    for _ in range(50):  # warm up: imports, caches, the allocator
        measure(flat(args.small), False, args.nodes)
    for name, make, chunked, big in cases:
        # small and big taken in turns, the least disturbed of each: the machine is shared
        small_specs, big_specs = make(args.small), make(big)
        smalls: list[Cost] = []
        bigs: list[Cost] = []
        for _ in range(3 if big <= 10_000 else 2):
            smalls += [measure(small_specs, chunked, args.nodes) for _ in range(16)]
            bigs.append(measure(big_specs, chunked, args.nodes))
        smalls += [measure(small_specs, chunked, args.nodes) for _ in range(16)]
        small_cost = min(smalls, key=lambda c: c.cpu)
        big_cost = min(bigs, key=lambda c: c.cpu)
        for label, size, cost in (("small", args.small, small_cost), ("big", big, big_cost)):
            first = label == "small"
            table.add_row(
                name if first else "",
                f"{size:,} ({cost.events:,})",
                f"{cost.per_event_us:.1f}",
                "" if first else f"{cost.per_event_us / small_cost.per_event_us:.2f}",
                f"{cost.steady_us:.1f}",
                "" if first else f"{cost.steady_us / small_cost.steady_us:.2f}",
                f"{cost.build / size * 1e6:.1f}",
                end_section=not first,
            )
    console = Console(width=150)
    console.print(table)
    console.print(
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
