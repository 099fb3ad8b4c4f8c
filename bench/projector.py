"""Whether the projections keep up: the projector's fold + DuckDB commit, driven directly (no NATS),
with per-run reads timed from another thread while it folds, as the API does.

    python bench/projector.py [--runs 1000] [--tasks-per-run 20] [--wide 100000]

(a) --runs concurrently active runs of --tasks-per-run tasks, their events interleaved as a busy
    cluster produces them (placed, started, succeeded per task), in batches of 2,000 messages;
(b) one --wide task run: run.created + tasks.added chunks of 1,000 tasks, then its attempts.
Reports events/s applied, per-batch time, resident memory of the models, and the latency of the
API's per-run queries (the run, a 1,000-task page, one task with its attempts) during the fold.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import psutil
from report import print_rows

from maze.events.catalog import Event
from maze.events.runs import RunCreated, RunFinished, TasksAdded
from maze.events.specs import InputValue, TaskSpec
from maze.events.tasks import AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.projections import db, queries
from maze.projections.folder import Folder
from maze.projections.projector import BATCH

RESULT = msgspec.msgpack.encode({"x": 1})


def spec(i: int) -> TaskSpec:
    return TaskSpec(
        task_id=f"task_{i:06d}",
        name="noop",
        func_name="noop",
        func_hash="a" * 64,
        call_style="kwargs",
        inputs={"x": InputValue(data=msgspec.msgpack.encode(i))},
        outputs=["x"],
    )


def lifecycle(run_id: str, task_id: str, at: int) -> list[Event]:
    return [
        AttemptPlaced(run_id=run_id, task_id=task_id, attempt=1, node_id="n1", at_ms=at, session="s"),
        AttemptStarted(run_id=run_id, task_id=task_id, attempt=1, node_id="n1", at_ms=at + 1),
        AttemptSucceeded(
            run_id=run_id, task_id=task_id, attempt=1, node_id="n1", at_ms=at + 2, result=RESULT
        ),
    ]


class Reader(threading.Thread):
    """Asks the API's per-run queries over and over, on its own cursor, timing each."""

    def __init__(self, conn, folder: Folder, run_ids: list[str], task_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.cur = db.cursor(conn)
        self.folder = folder
        self.run_ids, self.task_ids = run_ids, task_ids
        self.samples: dict[str, list[float]] = {"run": [], "tasks page": [], "task": []}
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(1)
        while not self.stop.is_set():
            run_id = rng.choice(self.run_ids)
            task_id = rng.choice(self.task_ids)
            for name in self.samples:
                start = time.perf_counter()
                try:
                    if name == "run":  # as GET /runs/{id}: the committed row in memory, else DuckDB
                        row = self.folder.run_rows.get(run_id)
                        if row is not None:
                            queries.run_from_row(row)
                        elif queries.find_run(self.cur, run_id) is None:
                            raise LookupError(run_id)
                    elif name == "tasks page":
                        queries.get_tasks(self.cur, run_id, 1000, 0)
                    else:
                        queries.get_task(self.cur, run_id, task_id)
                except Exception:
                    continue  # not projected yet
                self.samples[name].append(time.perf_counter() - start)
            time.sleep(0.005)


def fold_all(folder: Folder, messages: list[tuple[int, list[Event]]], per_batch: int) -> list[float]:
    batch_times = []
    for start in range(0, len(messages), per_batch):
        batch = [("MAZE_RUNS", seq, events) for seq, events in messages[start : start + per_batch]]
        began = time.perf_counter()
        folder.commit(*folder.fold(batch))
        batch_times.append(time.perf_counter() - began)
    return batch_times


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else float("nan")


def scenario(
    name: str,
    messages: list[tuple[int, list[Event]]],
    run_ids: list[str],
    task_ids: list[str],
    per_batch: int,
    path: Path,
    rows: list[tuple[str, str]],
) -> None:
    conn = db.open_db(path)
    folder = Folder(conn)
    # the runs themselves first, so the reader has something to ask for from the start
    created = [m for m in messages if isinstance(m[1][0], RunCreated | TasksAdded)]
    rest = [m for m in messages if not isinstance(m[1][0], RunCreated | TasksAdded)]
    rss_before = psutil.Process().memory_info().rss
    began = time.perf_counter()
    create_times = fold_all(folder, created, per_batch)
    reader = Reader(conn, folder, run_ids, task_ids)
    reader.start()
    batch_times = fold_all(folder, rest, per_batch)
    elapsed = time.perf_counter() - began
    reader.stop.set()
    reader.join()
    rss = psutil.Process().memory_info().rss - rss_before
    events = sum(len(evs) for _, evs in messages)
    rows += [
        (f"{name}: events applied", f"{events:,} in {elapsed:.1f} s = {events / elapsed:,.0f}/s"),
        (
            f"{name}: batch of {per_batch} messages, p50 / p99",
            f"{pct(batch_times, 0.5):.0f} / {pct(batch_times, 0.99):.0f} ms",
        ),
        (f"{name}: creating the runs", f"{sum(create_times):.2f} s"),
        (f"{name}: resident memory grown", f"{rss / 2**20:,.0f} MB"),
    ]
    for query, samples in reader.samples.items():
        rows.append(
            (
                f"{name}: read '{query}' during the fold, p50 / p99 ({len(samples)})",
                f"{pct(samples, 0.5):.1f} / {pct(samples, 0.99):.1f} ms",
            )
        )
    conn.close()


def many_runs(runs: int, per_run: int) -> tuple[list[tuple[int, list[Event]]], list[str], list[str]]:
    seq = 0
    messages: list[tuple[int, list[Event]]] = []
    run_ids = [f"run_{r:05d}" for r in range(runs)]
    for run_id in run_ids:
        seq += 1
        messages.append(
            (
                seq,
                [
                    RunCreated(
                        run_id=run_id, workflow_id="w", at_ms=seq, tasks=[spec(i) for i in range(per_run)]
                    )
                ],
            )
        )
    for i in range(per_run):  # every run advances one task at a time: interleaved
        for run_id in run_ids:
            for event in lifecycle(run_id, f"task_{i:06d}", seq):
                seq += 1
                messages.append((seq, [event]))
    for run_id in run_ids:
        seq += 1
        messages.append((seq, [RunFinished(run_id=run_id, at_ms=seq, state="succeeded")]))
    return messages, run_ids, [f"task_{i:06d}" for i in range(per_run)]


def one_wide_run(tasks: int) -> tuple[list[tuple[int, list[Event]]], list[str], list[str]]:
    specs = [spec(i) for i in range(tasks)]
    chunk = 1000
    parts = [specs[i : i + chunk] for i in range(0, tasks, chunk)]
    messages: list[tuple[int, list[Event]]] = [
        (
            1,
            [
                RunCreated(
                    run_id="run_wide",
                    workflow_id="w",
                    at_ms=1,
                    tasks=parts[0],
                    task_count=tasks,
                    chunks=len(parts),
                )
            ],
        )
    ]
    for n, part in enumerate(parts[1:], start=1):
        messages.append(
            (n + 1, [TasksAdded(run_id="run_wide", chunk=n, at_ms=1, tasks=part, offset=n * chunk)])
        )
    seq = len(messages)
    for i in range(0, tasks, 10):  # a worker's outbox reports a few tasks of a run per message
        events: list[Event] = []
        for j in range(i, min(tasks, i + 10)):
            events += lifecycle("run_wide", f"task_{j:06d}", seq)
        seq += 1
        messages.append((seq, events))
    messages.append((seq + 1, [RunFinished(run_id="run_wide", at_ms=seq, state="succeeded")]))
    return messages, ["run_wide"], [f"task_{i:06d}" for i in range(0, tasks, 997)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tasks-per-run", type=int, default=20)
    parser.add_argument("--wide", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maze-bench-projector-"))
    rows: list[tuple[str, str]] = []
    try:
        # the projector batches what arrives within 50 ms, up to 2,000 messages: many small runs
        # fill whole batches, one wide run at ~4,000 tasks/s sends ~20 messages per window
        many = many_runs(args.runs, args.tasks_per_run)
        scenario(f"(a) {args.runs:,} active runs", *many, BATCH, tmp / "a.duckdb", rows)
        scenario(f"(b) one {args.wide:,}-task run", *one_wide_run(args.wide), 20, tmp / "b.duckdb", rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_rows("projector: fold + DuckDB commit, reads from another thread", rows)


if __name__ == "__main__":
    main()
