"""Cancel latency: a run with two running tasks (each with a child process of its own) and two
queued ones; time from the cancel request to the run's `cancelled` answer, and to the last of the
tasks' processes gone. p50 / p99 over --rounds.

    python bench/cancel.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from report import print_rows

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def hold(pid_file: str = ""):
    import subprocess
    import time as _t

    child = subprocess.Popen(["sleep", "300"])
    with open(pid_file, "w") as out:
        out.write(f"{child.pid}\n")
    _t.sleep(300)
    return {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-cancel-"))
    head = LocalHead(root / "head", extra=["--cpus", "2"])
    head.start(min_nodes=1)
    answered: list[float] = []
    gone: list[float] = []
    try:
        client = MaClient(head.url)
        for n in range(args.rounds):
            wf = client.create_workflow()
            files = [root / f"r{n}-t{i}.pid" for i in range(4)]
            for f in files:
                wf.add_task(hold, inputs={"pid_file": str(f)})
            run_id = wf.run()
            deadline = time.monotonic() + 30
            while sum(f.exists() and f.read_text().endswith("\n") for f in files) < 2:
                assert time.monotonic() < deadline, "the tasks did not start"
                time.sleep(0.01)
            pids = [int(f.read_text()) for f in files if f.exists() and f.read_text().endswith("\n")]
            began = time.perf_counter()
            result = client.cancel_run(run_id, reason="bench")
            answered.append(time.perf_counter() - began)
            assert result["state"] == "cancelled", result
            while any(alive(p) for p in pids):
                time.sleep(0.001)
            gone.append(time.perf_counter() - began)
    finally:
        head.stop()
    ms = 1000.0
    print_rows(
        f"cancel ({args.rounds} rounds; 2 running tasks with a child each, 2 queued)",
        [
            ("cancel -> run cancelled (answer), p50", f"{statistics.median(answered) * ms:.1f} ms"),
            ("cancel -> run cancelled (answer), p99", f"{pct(answered, 0.99) * ms:.1f} ms"),
            ("cancel -> last process gone, p50", f"{statistics.median(gone) * ms:.1f} ms"),
            ("cancel -> last process gone, p99", f"{pct(gone, 0.99) * ms:.1f} ms"),
        ],
    )


if __name__ == "__main__":
    main()
