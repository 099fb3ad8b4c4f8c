"""Searching a long history: `GET /runs` with filters and `GET /runs/{id}` with 100,000 runs in it,
and how fast the read models are rebuilt from the log.

    python bench/history.py [--runs 100000] [--requests 300] [--fsync interval|always]
                            [--messages-per-run 1|3]

Starts a nats-server of its own and a head on it without workers, writes `--runs` finished runs
straight into the log (5 events a run: run.created, attempt.placed, .started, .succeeded or
.failed, run.finished; kinds, states, names and times varied, as history has them), in one message
a run, or with `--messages-per-run 3` as a live cluster writes them (the worker's start and end on
its own subject),
waits until the head's read models have folded them all, then times each query over HTTP from
this process (httpx, one kept-alive connection: what the SDK does), p50 and p99 of `--requests`
each. Then the rebuild: the same replay `POST /projections/rebuild` does (every message of the
log folded into fresh DuckDB files by the shard processes), timed alone as events per second, and the whole endpoint
(replay, compare with the live tables, swap). `--fsync interval` (the default) only makes writing
the history faster; reads are the same either way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import nats
from report import print_rows
from rich.progress import Progress

from maze.events import subjects
from maze.events.codec import encode_events, encode_value
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputValue, TaskError, TaskSpec
from maze.events.tasks import AttemptFailed, AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.head.nats_server import nats_server_binary, server_config
from maze.projections.rebuild import replayed
from maze.projections.run_search import RunQuery, encode_cursor
from maze.sdk.local_head import LocalHead, free_port

EVENTS_PER_RUN = 5
BASE_MS = 1_780_000_000_000
SPAN_MS = 30 * 86_400_000  # the history covers 30 days
TOPICS = [f"topic-{i:02d}" for i in range(50)]
STEPS = [f"step {name}" for name in ("fetch", "parse", "embed", "rank", "summarize", "review", "publish")]
ERROR = TaskError(error_type="user_code", message="ValueError: bad input", origin="task")


def run_id_of(i: int) -> str:
    return f"run_hist{i:09d}"


def run_messages(i: int, rng: random.Random, split: bool) -> list[tuple[str, bytes]]:
    """Run `i`'s events as messages: one (`split` False), or three as a live cluster writes them
    (the run with its placement; the worker's start and end on its own subject; the run's end)."""
    run_id = run_id_of(i)
    step = STEPS[i % len(STEPS)]
    spec = TaskSpec(
        task_id="t",
        name=step,
        func_name=step.replace(" ", "_"),
        func_hash="f" * 64,
        call_style="kwargs",
        inputs={"x": InputValue(data=msgspec.msgpack.encode(i))},
        outputs=("x",),
    )
    created = BASE_MS + i * SPAN_MS // 100_000
    finished = created + rng.randint(10, 60_000)
    kind = rng.choices(("static", "dynamic", "react"), (80, 15, 5))[0]
    state = rng.choices(("succeeded", "failed", "cancelled", "timed_out"), (85, 10, 4, 1))[0]
    key = {"run_id": run_id, "task_id": "t", "attempt": 1, "node_id": "history-node"}
    ended = (
        AttemptSucceeded(**key, at_ms=finished, result=encode_value({"x": i}))
        if state == "succeeded"
        else AttemptFailed(**key, at_ms=finished, error=ERROR)
    )
    events = [
        RunCreated(
            run_id=run_id,
            workflow_id=f"{TOPICS[i % len(TOPICS)]}-{i}",
            at_ms=created,
            tasks=[spec],
            kind=kind,
        ),
        AttemptPlaced(**key, at_ms=created, session="old", reason="history"),
        AttemptStarted(**key, at_ms=created + 1),
        ended,
        RunFinished(run_id=run_id, at_ms=finished, state=state),
    ]
    head = subjects.run_subject(run_id)
    if not split:
        return [(head, encode_events(events))]
    return [
        (head, encode_events(events[:2])),
        (subjects.report_subject(run_id, "history-node"), encode_events(events[2:4])),
        (head, encode_events(events[4:])),
    ]


async def write_history(url: str, runs: int, split: bool = False) -> int:
    """Returns the runs stream's last sequence."""
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=60)
    rng = random.Random(100_000)
    last = 0
    try:
        with Progress() as progress:
            bar = progress.add_task("writing history", total=runs)
            step = 2_000
            for start in range(0, runs, step):
                batch = range(start, min(runs, start + step))
                acks = await asyncio.gather(
                    *(
                        js.publish(subject, data, headers={"Nats-Msg-Id": f"hist/{i}/{k}"})
                        for i in batch
                        for k, (subject, data) in enumerate(run_messages(i, rng, split))
                    )
                )
                last = max(last, *(a.seq for a in acks))
                progress.update(bar, advance=len(batch))
    finally:
        await nc.close()
    return last


def wait_folded(url: str, last: int) -> None:
    with Progress() as progress:
        bar = progress.add_task("read models folding it", total=last)
        while True:
            diagnostics = httpx.get(f"{url}/cluster/diagnostics", timeout=30).json()
            done = int(diagnostics["projector"]["positions"].get(subjects.RUNS_STREAM, 0))
            progress.update(bar, completed=min(done, last))
            if done >= last:
                return
            time.sleep(1)


def timed(client: httpx.Client, path: str, params: dict[str, object], n: int) -> tuple[list[float], object]:
    answer: object = None
    for _ in range(10):  # warm-up
        client.get(path, params=params).raise_for_status()
    took = []
    for _ in range(n):
        began = time.perf_counter()
        resp = client.get(path, params=params)
        took.append(time.perf_counter() - began)
        resp.raise_for_status()
        answer = resp.json()
    return took, answer


def pct(took: list[float]) -> str:
    ordered = sorted(took)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(ordered) * 1000:.1f} / {p99 * 1000:.1f} ms"


async def replay(url: str, where: Path, last: int) -> tuple[float, float]:
    """The rebuild's replay alone: every runs-stream message folded into fresh read-model files
    (one per shard process), what `POST /projections/rebuild` then compares and swaps in. Wall and
    CPU seconds, this process's and its shards' together (this VM is shared: the CPU figure moves
    less with what else runs)."""
    nc = await nats.connect(url)
    try:
        began, cpu = time.perf_counter(), _cpu_s()
        async with replayed(nc, where, {subjects.RUNS_STREAM: last}):
            took = time.perf_counter() - began
        return took, _cpu_s() - cpu  # the shards' CPU counts once they are reaped, on leaving
    finally:
        await nc.close()


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that ended (the shards, once replayed)."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--fsync", default="interval", choices=["always", "interval"])
    parser.add_argument(
        "--messages-per-run",
        type=int,
        default=1,
        choices=[1, 3],
        help="1: each run's 5 events in one message; 3: as a live cluster writes them (the worker's on its subject)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-history-"))
    nats_port = free_port()
    conf = root / "nats.conf"
    conf.write_text(server_config("127.0.0.1", nats_port, root / "js", args.fsync, 8))
    server = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    nats_url = f"nats://127.0.0.1:{nats_port}"
    head = LocalHead(root / "head", extra=["--nats", nats_url, "--no-local-worker", "--log-level", "warning"])
    rows: list[tuple[str, str]] = []
    try:
        time.sleep(0.5)  # nats-server binds its port (the head waits for it too)
        head.start()
        began = time.perf_counter()
        last = asyncio.run(write_history(nats_url, args.runs, args.messages_per_run == 3))
        written = time.perf_counter() - began
        wait_folded(head.url, last)
        folded = time.perf_counter() - began
        events = args.runs * EVENTS_PER_RUN
        rows += [
            (
                "runs in history (events, messages)",
                f"{args.runs:,} ({events:,}, {args.runs * args.messages_per_run:,})",
            ),
            ("writing them to the log", f"{written:.1f} s"),
            ("until the live read models had folded them", f"{folded:.1f} s"),
        ]
        mid = args.runs // 2
        mid_ms = BASE_MS + mid * SPAN_MS // 100_000
        day = 86_400_000
        deep = encode_cursor(RunQuery(), {"created_at_ms": mid_ms, "run_seq": mid + 1})
        queries: list[tuple[str, dict[str, object]]] = [
            ("newest 50", {}),
            ("state=failed", {"state": "failed"}),
            ("kind=dynamic", {"kind": "dynamic"}),
            ("state=cancelled,timed_out & kind=react", {"state": "cancelled,timed_out", "kind": "react"}),
            ("search=topic-17 (2% match)", {"search": "topic-17"}),
            ("search=step publish (14% match)", {"search": "step publish"}),
            ("search matching nothing", {"search": "no-such-name"}),
            ("created in one day, mid-history", {"created_after": mid_ms, "created_before": mid_ms + day}),
            (
                "all filters at once",
                {
                    "state": "succeeded",
                    "kind": "static",
                    "created_after": mid_ms - 5 * day,
                    "created_before": mid_ms + 5 * day,
                    "search": "step embed",
                },
            ),
            ("sort=finished", {"sort": "finished"}),
            ("sort=created&order=asc", {"order": "asc"}),
            ("a cursor page mid-history", {"cursor": deep}),
            ("state=failed, a cursor page mid-history", {"state": "failed", "cursor": deep}),
        ]
        results: list[tuple[str, list[float]]] = []
        load_before = os.getloadavg()[0]
        with httpx.Client(base_url=head.url, timeout=30) as client:
            for name, params in queries:
                took, answer = timed(client, "/runs", {"limit": 50, **params}, args.requests)
                assert isinstance(answer, list) and (answer or "nothing" in name), name
                results.append((f"GET /runs?limit=50, {name}", took))
            recent, _ = timed(client, f"/runs/{run_id_of(args.runs - 1)}", {}, args.requests)
            results.append(("GET /runs/{id}, a recent run (the projector's memory)", recent))
            legacy, _ = timed(client, "/runs", {"limit": 50, "offset": mid}, max(20, args.requests // 10))
            results.append((f"GET /runs?limit=50&offset={mid:,} (the older way; no target)", legacy))
            # the rebuild empties the projector's memory of runs: every run is now read from DuckDB
            began = time.perf_counter()
            report = client.post("/projections/rebuild", timeout=3600).json()
            whole = time.perf_counter() - began
            rng = random.Random(7)
            took = []
            for run_id in [run_id_of(rng.randrange(args.runs)) for _ in range(args.requests)]:
                began = time.perf_counter()
                client.get(f"/runs/{run_id}").raise_for_status()
                took.append(time.perf_counter() - began)
            results.append(("GET /runs/{id}, any run (read from DuckDB)", took))
            # again: the first call's processes touched memory this machine had not lent them yet
            # (a VM's guest pages are backed on first touch; README: Performance)
            began = time.perf_counter()
            again_report = client.post("/projections/rebuild", timeout=3600).json()
            again = time.perf_counter() - began
        everything = [t for name, took in results if "offset" not in name for t in took]
        rows.append(
            (
                "load average (1 min) before / after the queries",
                f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
            )
        )
        for name, took in results:
            rows.append((f"{name}, p50 / p99", pct(took)))
        rows.append(
            ("every query above but the offset one, p50 / p99 (target p99 <= 20 ms)", pct(everything))
        )
        replay_s, replay_cpu = asyncio.run(replay(nats_url, root, last))
        rows.append(
            (
                "rebuild: the replay alone (log -> fresh DuckDB files), target >= 100,000 events/s",
                f"{replay_s:.1f} s, {events / replay_s:,.0f} events/s "
                f"({events / replay_cpu:,.0f} per CPU-second of this process and its shards)",
            )
        )
        for name, took_s, answer in (
            ("POST /projections/rebuild (replay, compare, swap), its first call", whole, report),
            ("POST /projections/rebuild, called again", again, again_report),
        ):
            rows.append(
                (
                    name,
                    f"{took_s:.2f} s, {events / took_s:,.0f} events/s, equal: {answer.get('equal')}; "
                    + ", ".join(f"{part} {s:.2f} s" for part, s in answer.get("seconds", {}).items()),
                )
            )
    finally:
        head.stop()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    print_rows(f"history: {args.runs:,} runs (written with fsync {args.fsync})", rows)


if __name__ == "__main__":
    main()
