"""How long a head restart takes with a long history: start-up must not depend on its length.

    python bench/restart.py [--events 1000000] [--fsync interval|always]

Starts a head, writes `--events` events of finished runs into its log (5 events a run: run.created,
attempt.placed, .started, .succeeded, run.finished, as one message per run so that the live
controller decides nothing about them), waits until the controller and the projector have folded
them all, then restarts the head twice and times each start, from the process start to the API
answering with the controller deciding (`GET /cluster/diagnostics`, `live`):
(a) after a clean stop (the controller leaves a snapshot at stop);
(b) after 50,000 more events and a kill -9 (the head runs with `--snapshot-interval 3600`, so it
    starts from the snapshot of the clean stop and replays all that followed).
For comparison it also times a bare fold of the whole log into the controller's core, which is what
every start cost before snapshots. `--fsync interval` (the default here) only makes writing the
history faster; the restart reads the same either way.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import nats
from report import print_rows
from rich.progress import Progress

from maze.events import subjects
from maze.events.codec import decode_events, encode_events
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputValue, TaskSpec
from maze.events.store import subscribe_ordered
from maze.events.tasks import AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.head.scheduler import Scheduler
from maze.sdk.local_head import LocalHead

EVENTS_PER_RUN = 5
RESULT = msgspec.msgpack.encode({"x": 1})


def run_message(i: int) -> bytes:
    run_id = f"run_hist{i:09d}"
    spec = TaskSpec(
        task_id="t",
        name="noop",
        func_name="noop",
        func_hash="f" * 64,
        call_style="kwargs",
        inputs={"x": InputValue(data=msgspec.msgpack.encode(i))},
        outputs=("x",),
    )
    at = 1_700_000_000_000 + i
    key = {"run_id": run_id, "task_id": "t", "attempt": 1, "node_id": "history-node", "at_ms": at}
    return encode_events(
        [
            RunCreated(run_id=run_id, workflow_id=run_id, at_ms=at, tasks=[spec]),
            AttemptPlaced(**key, session="old", reason="history"),
            AttemptStarted(**key),
            AttemptSucceeded(**key, result=RESULT),
            RunFinished(run_id=run_id, at_ms=at, state="succeeded"),
        ]
    )


async def write_history(url: str, runs: int, first: int = 0) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    try:
        with Progress() as progress:
            bar = progress.add_task("writing history", total=runs * EVENTS_PER_RUN)
            step = 2_000
            for start in range(first, first + runs, step):
                batch = range(start, min(first + runs, start + step))
                await asyncio.gather(
                    *(
                        js.publish(
                            subjects.run_subject(f"run_hist{i:09d}"),
                            run_message(i),
                            headers={"Nats-Msg-Id": f"hist/{i}"},
                        )
                        for i in batch
                    )
                )
                progress.update(bar, advance=len(batch) * EVENTS_PER_RUN)
    finally:
        await nc.close()


async def bare_fold(url: str) -> tuple[float, int]:
    """Seconds to fold the whole run stream into the controller's core (no snapshot)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        last = (await js.stream_info(subjects.RUNS_STREAM)).state.last_seq
        core = Scheduler()
        sub = await subscribe_ordered(js, subjects.RUN_SUBJECTS, 1)
        events = 0
        began = time.perf_counter()
        seq = 0
        while seq < last:
            msg = await sub.next_msg(timeout=30)
            seq = msg.metadata.sequence.stream
            for event in decode_events(msg.data):
                core.apply(event)
                events += 1
        took = time.perf_counter() - began
        await sub.unsubscribe()
        return took, events
    finally:
        await nc.close()


def diagnostics(url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{url}/cluster/diagnostics", timeout=10).json()


def wait_folded(url: str, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with Progress() as progress:
        bar = progress.add_task("controller and projector folding it", total=target)
        while time.monotonic() < deadline:
            d = diagnostics(url)
            ctl = d["controller"]["positions"].get(subjects.RUNS_STREAM, 0)
            proj = d["projector"]["positions"].get(subjects.RUNS_STREAM, 0)
            progress.update(bar, completed=min(ctl, proj))
            if ctl >= target and proj >= target:
                return
            time.sleep(1)
    raise TimeoutError("the history was not folded in time")


def timed_start(head: LocalHead) -> tuple[float, dict]:  # type: ignore[type-arg]
    began = time.perf_counter()
    head.start(timeout=600)
    while True:
        try:
            d = diagnostics(head.url)
            if d["controller"]["live"]:
                return time.perf_counter() - began, d
        except httpx.HTTPError:
            pass
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fsync", default="interval", choices=["always", "interval"])
    args = parser.parse_args()
    runs = args.events // EVENTS_PER_RUN
    data_dir = Path(tempfile.mkdtemp(prefix="maze-bench-restart-"))
    # no periodic snapshot within the run: (b) then starts from the one the clean stop left
    head = LocalHead(
        data_dir,
        extra=[
            "--fsync",
            args.fsync,
            "--no-local-worker",
            "--snapshot-interval",
            "3600",
            "--log-level",
            "info",
        ],
    )
    rows: list[tuple[str, str]] = []
    try:
        head.start()
        url = head.nats_url  # the head's credentials: the streams are read and written as the head does
        began = time.perf_counter()
        asyncio.run(write_history(url, runs))
        written = time.perf_counter() - began
        target = runs  # one message per run
        wait_folded(head.url, target, timeout=7200)
        folded = time.perf_counter() - began
        fold_s, fold_events = asyncio.run(bare_fold(url))
        rows += [
            ("events in the log (runs x 5)", f"{runs * EVENTS_PER_RUN:,}"),
            ("writing them", f"{written:.1f} s"),
            ("until the controller and projector had folded them", f"{folded:.1f} s"),
            (
                "a bare fold of the whole log (what a start cost before snapshots)",
                f"{fold_s:.2f} s ({fold_events:,} events)",
            ),
        ]
        time.sleep(2)
        head.stop()
        took, d = timed_start(head)
        ctl = d["controller"]
        replayed = ctl["positions"][subjects.RUNS_STREAM] - ctl["started_from"][subjects.RUNS_STREAM]
        rows.append(
            ("(a) start after a clean stop: ready in", f"{took:.2f} s (replayed {replayed:,} messages)")
        )
        # more history, folded, then kill -9 before the next periodic snapshot covers it
        url = head.nats_url  # the head's credentials: the streams are read and written as the head does
        tail_runs = min(10_000, runs)
        asyncio.run(write_history(url, tail_runs, first=runs))
        wait_folded(head.url, runs + tail_runs, timeout=600)
        assert head.proc is not None
        head.proc.send_signal(signal.SIGKILL)
        head.proc.wait()
        time.sleep(1)
        took, d = timed_start(head)
        ctl = d["controller"]
        replayed = ctl["positions"][subjects.RUNS_STREAM] - ctl["started_from"][subjects.RUNS_STREAM]
        rows.append(("(b) start after kill -9: ready in", f"{took:.2f} s (replayed {replayed:,} messages)"))
        rows.append(("the snapshot it started from", f"{(ctl['snapshot'] or {}).get('bytes', 0):,} bytes"))
    finally:
        head.stop()
        log = (data_dir / "head.log").read_text(errors="replace") if (data_dir / "head.log").exists() else ""
        for line in log.splitlines():
            if "head.ready" in line or "controller.caught_up" in line:
                print(line[-400:])
        shutil.rmtree(data_dir, ignore_errors=True)
    print_rows(
        f"head restart with {args.events:,} events in the log (history written with fsync {args.fsync})", rows
    )


if __name__ == "__main__":
    main()
