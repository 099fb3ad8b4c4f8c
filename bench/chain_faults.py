"""A long chain, run whole and with the head killed -9 in its middle (followers: README,
"Placement"): milliseconds per edge, and what the log says after the restart.

    python bench/chain_faults.py [--tasks 3000] [--kill-at 0.3 1.5 2.6]

For each case: a fresh head with its own worker; a chain of --tasks no-op tasks submitted; for a
kill, the head and everything it started are killed -9 that many seconds after the submit, then
the head is started again on the same data dir. Printed per case: the run's state and last
result, seconds and milliseconds per edge (submit to the run's end, its state polled every
0.2 s), the event kinds in its history, tasks that succeeded twice (must be 0), and whether the
read models rebuilt from the log equal the live ones.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def inc(x: int = 0) -> dict:
    return {"x": x + 1}


def _kill_all(head: LocalHead) -> None:
    """kill -9 of the head and of every process it started (its nats-server, its read models)."""
    assert head.proc is not None
    head.proc.send_signal(signal.SIGKILL)
    head.proc.wait()
    found = subprocess.run(["pgrep", "-f", str(head.data_dir)], capture_output=True, text=True).stdout
    for pid in found.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1)


def one(tasks: int, kill_at: float | None) -> dict[str, object]:
    head = LocalHead(Path(tempfile.mkdtemp(prefix="maze-chain-faults-")) / "head")
    head.start(min_nodes=1)
    try:
        client = MaClient(head.url)
        wf = client.create_workflow()
        last = wf.add_task(inc, inputs={"x": 0})
        for _ in range(tasks - 1):
            last = wf.add_task(inc, inputs={"x": last.outputs["x"]})
        began = time.perf_counter()
        run_id = wf.run()
        if kill_at is not None:
            time.sleep(kill_at)
            _kill_all(head)
            head.start(min_nodes=1)
            client = MaClient(head.url)
        deadline = time.monotonic() + 600
        while (state := client.get_run(run_id)["state"]) not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {state}")
            time.sleep(0.2)
        took = time.perf_counter() - began
        events = client.get_run_events(run_id)
        kinds: dict[str, int] = {}
        for event in events:
            kinds[event["type"]] = kinds.get(event["type"], 0) + 1
        succeeded = [e["task_id"] for e in events if e["type"] == "attempt.succeeded"]
        rebuilt = httpx.post(f"{head.url}/projections/rebuild", timeout=600).json()
        return {
            "state": state,
            "last": client.get_run_task(run_id, last.task_id).get("result"),
            "seconds": took,
            "per_edge_ms": took * 1000 / max(1, tasks - 1),
            "kinds": kinds,
            "twice": len(succeeded) - len(set(succeeded)),
            "rebuild_equal": rebuilt["equal"],
        }
    finally:
        head.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--kill-at", type=float, nargs="*", default=[0.3, 1.5, 2.6])
    args = parser.parse_args()
    table = Table(title=f"a {args.tasks}-task chain, whole and with the head killed -9")
    for column in ("case", "state", "last", "s", "ms/edge", "lost", "placed", "twice", "rebuild equal"):
        table.add_column(column)
    for kill_at in [None, *args.kill_at]:
        got = one(args.tasks, kill_at)
        kinds = got["kinds"]
        assert isinstance(kinds, dict)
        table.add_row(
            "whole" if kill_at is None else f"kill -9 at {kill_at:g} s",
            str(got["state"]),
            str(got["last"]),
            f"{got['seconds']:.2f}",
            f"{got['per_edge_ms']:.2f}",
            str(kinds.get("attempt.lost", 0)),
            str(kinds.get("attempt.placed", 0)),
            str(got["twice"]),
            str(got["rebuild_equal"]),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
