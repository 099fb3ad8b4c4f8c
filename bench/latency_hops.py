"""Where one task's latency goes: per-hop timestamps (microseconds, written by each process to its
own file when started with MAZE_TRACE_HOPS, never in the events), for a run of one no-op task,
submitted and followed the way users do (`workflow.run()`, then `get_results()`).

    python bench/latency_hops.py [--runs 300] [--fsync always|interval]

Prints, for each hop of the chain, the median and p99 of the time since the hop before it (of those
a run passed: one that ends in its first message has no run.finished of its own to wait for), the
total, when the read models had the run's end (beside the chain: the client does not wait for
them), and how many messages the event and work streams took per task.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import nats
from report import print_rows

from maze import MaClient, task
from maze.core import hops
from maze.events import subjects
from maze.sdk.local_head import LocalHead

CHAIN = [
    ("submit", "client: workflow.run() called"),
    ("request_received", "API: the submit's body received"),
    ("validated", "API: validated, its events and placements made"),
    ("work_received", "worker (the head's own): its work taken, before the run is stored"),
    ("process_start", "worker: handed to the task process"),
    ("process_returned", "worker: result back from the process"),
    ("early_taken", "API: the attempt's start and result taken into the run's message"),
    ("appended", "API: run.created, placements, start, result (and run.finished) stored: one message"),
    ("published_run.finished", "controller: run.finished stored (when not in the run's first message)"),
    ("sse_sent", "API: the end sent on the client's SSE stream"),
    ("delivered", "client: get_results() returned"),
]


@task
def noop(x: int = 0):
    return {"x": x}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def stream_seqs(url: str) -> dict[str, int]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return {
            s: (await js.stream_info(s)).state.last_seq for s in (subjects.RUNS_STREAM, subjects.WORK_STREAM)
        }
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--fsync", default="always", choices=["always", "interval"])
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="maze-bench-hops-"))
    trace_dir = data_dir / "hops"
    os.environ["MAZE_TRACE_HOPS"] = str(trace_dir)
    hops.configure(str(trace_dir))
    head = LocalHead(data_dir / "head", extra=["--fsync", args.fsync])
    run_ids: list[str] = []
    try:
        head.start(min_nodes=1)
        client = MaClient(head.url)
        url = head.nats_url  # the head's credentials: the streams are read and written as the head does
        wf = client.create_workflow()
        wf.add_task(noop, inputs={"x": 1})
        for _ in range(20):  # warm-up
            wf.get_results(wf.run(), verbose=False)
            wf.clear_cache()
        before = asyncio.run(stream_seqs(url))
        for _ in range(args.runs):
            submitted = time.time_ns() // 1000
            run_id = wf.run()
            messages = wf.get_results(run_id, verbose=False)
            hops.mark("submit", run_id, submitted)
            hops.mark("delivered", run_id)
            assert messages[-1]["data"]["state"] == "succeeded", messages[-1]
            wf.clear_cache()
            run_ids.append(run_id)
        after = asyncio.run(stream_seqs(url))
    finally:
        head.stop()
    hops.flush()
    seen: dict[str, dict[str, int]] = defaultdict(dict)
    for path in trace_dir.glob("hops-*.txt"):
        for line in path.read_text().splitlines():
            hop, run_id, at = line.split(" ")
            seen[run_id].setdefault(hop, int(at))
    shutil.rmtree(data_dir, ignore_errors=True)
    deltas: dict[str, list[float]] = defaultdict(list)
    other_path = 0
    for run_id in run_ids:
        marks = seen[run_id]
        present = [hop for hop, _ in CHAIN if hop in marks]  # (a run whose end was in its first
        pairs = list(itertools.pairwise(present))  # message has no run.finished of its own)
        if any(marks[hop] < marks[prev] for prev, hop in pairs):
            other_path += 1  # its task answered after its run's message left: another order
        else:
            for prev, hop in pairs:
                deltas[hop].append((marks[hop] - marks[prev]) / 1000)
        deltas["total"].append((marks["delivered"] - marks["submit"]) / 1000)
        end_stored = marks.get("published_run.finished", marks.get("appended"))
        if "projected_finished" in marks and end_stored is not None:
            deltas["projected"].append((marks["projected_finished"] - end_stored) / 1000)
    rows = []
    for hop, what in CHAIN[1:]:
        values = deltas.get(hop, [])
        if values:
            rows.append((what, f"{statistics.median(values):.2f} / {pct(values, 0.99):.2f} ms"))
    rows.append(
        (
            "total, submit -> delivered",
            f"{statistics.median(deltas['total']):.2f} / {pct(deltas['total'], 0.99):.2f} ms",
        )
    )
    if deltas["projected"]:
        values = deltas["projected"]
        rows.append(
            (
                "(beside) read models had its end, after run.finished was stored",
                f"{statistics.median(values):.2f} / {pct(values, 0.99):.2f} ms",
            )
        )
    rows.append(("runs whose task answered after their message left (in the total only)", str(other_path)))
    per_run = {s: (after[s] - before[s]) / args.runs for s in after}
    rows.append(
        (
            "messages per one-task run: event stream / work stream",
            f"{per_run[subjects.RUNS_STREAM]:.2f} / {per_run[subjects.WORK_STREAM]:.2f}",
        )
    )
    # everything the run published, its run.created and run.finished included: a one-task run's
    # messages are its task's (the bar: at most 3 per task)
    rows.append(
        (
            "messages per task (all of the run's)",
            f"{per_run[subjects.RUNS_STREAM] + per_run[subjects.WORK_STREAM]:.2f}",
        )
    )
    print_rows(
        f"one no-op task, {args.runs} runs, hop by hop (median / p99 since the hop before), fsync {args.fsync}",
        rows,
    )


if __name__ == "__main__":
    main()
