"""The Playground in a real browser (Debian's chromium through Playwright): how fast the Runs
console shows its first page with a long history, and whether a run page stays responsive while
a wide fan-out streams its events. Also makes the README's screenshot of a run page.

    python bench/playground.py [--runs 100000] [--loads 7] [--tasks 2000] [--fanouts 3]
    python bench/playground.py --screenshot docs/playground-run.png

1. Console: a nats-server of its own and a head on it (`--playground`, no worker); `--runs`
   finished runs written straight into the log as bench/history.py does, folded by the read
   models; then `--loads` times a fresh browser context (nothing cached) opens `/playground/`, and
   as many times a reload in one context (the bundle cached). Timed in the page from navigation
   start (`performance.now()`) to the first row of the list in the DOM, and to the frame after it
   (painted). Target: <= 1 s.
2. Fan-out: a head with its local worker; a run of one gate task and `--tasks - 1` no-op tasks
   that read its output. The run page is opened while the gate holds (the DAG of all tasks
   drawn, its SSE stream live), then the gate opens and every task's events stream into the page
   until it shows them all succeeded. In the page: PerformanceObserver `longtask` entries (target:
   none over 200 ms) and the intervals between requestAnimationFrame callbacks (p50 / p99 / max),
   for the opening of the page and for the fan-out separately.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from history import wait_folded, write_history
from report import print_rows

from maze import MaClient, task
from maze.head.nats_server import nats_server_binary, server_config
from maze.sdk.local_head import LocalHead, free_port

# recorded in the page from its first script on: the first row of the Runs list (in the DOM, and
# the frame after), long tasks, and every animation frame
PROBE = """
window.__probe = { firstRow: null, firstRowFrame: null, longtasks: [], frames: [] };
new MutationObserver((_, obs) => {
  if (document.querySelector("tr[data-run]")) {
    window.__probe.firstRow = performance.now();
    obs.disconnect();
    requestAnimationFrame(() => requestAnimationFrame(() => { window.__probe.firstRowFrame = performance.now(); }));
  }
}).observe(document, { childList: true, subtree: true });
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__probe.longtasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
} catch (e) {}
(function tick(t) { window.__probe.frames.push(t); requestAnimationFrame(tick); })(performance.now());
"""


@task
def gate(path: str = ""):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return {"n": 1}


@task
def noop(n: int = 0):
    return {"n": n}


def chromium() -> Any:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("playground bench: chromium is not installed (apt-get install chromium)")
    return found


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} / {max(values):.0f} ms"


# ---- 1. the Runs console with a long history ------------------------------------------------------
def first_page(browser: Any, url: str, loads: int) -> list[tuple[str, str]]:
    cold: list[tuple[float, float, float]] = []
    warm: list[tuple[float, float, float]] = []

    def measure(page: Any, into: list[tuple[float, float, float]]) -> None:
        page.wait_for_selector("tr[data-run]", timeout=60_000)
        page.wait_for_function("window.__probe.firstRowFrame !== null", timeout=60_000)
        probe = page.evaluate(
            """() => {
              const list = performance.getEntriesByType("resource").filter((e) => /\\/runs\\?/.test(e.name));
              return [window.__probe.firstRow, window.__probe.firstRowFrame, list.length ? list[0].duration : -1];
            }"""
        )
        into.append((probe[0], probe[1], probe[2]))

    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_init_script(PROBE)
        page = context.new_page()
        page.goto(f"{url}/playground/")
        measure(page, cold)
        context.close()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(PROBE)
    page = context.new_page()
    page.goto(f"{url}/playground/")
    page.wait_for_selector("tr[data-run]", timeout=60_000)
    for _ in range(loads):
        page.reload()
        measure(page, warm)
    rows = int(page.locator("tr[data-run]").count())
    context.close()
    out = [("rows on the first page", str(rows))]
    for name, got in (("fresh context, nothing cached", cold), ("reload, bundle cached", warm)):
        out += [
            (f"first row in the DOM, {name}, p50 / max (target <= 1 s)", ms([g[0] for g in got])),
            (f"first row painted (next frame), {name}, p50 / max", ms([g[1] for g in got])),
            (f"  of which GET /runs?limit=50 (in the browser), {name}, p50 / max", ms([g[2] for g in got])),
        ]
    return out


def console_bench(browser: Any, root: Path, runs: int, loads: int) -> list[tuple[str, str]]:
    nats_port = free_port()
    conf = root / "nats.conf"
    conf.write_text(server_config("127.0.0.1", nats_port, root / "js", "interval", 8))
    server = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    nats_url = f"nats://127.0.0.1:{nats_port}"
    head = LocalHead(
        root / "console",
        extra=["--nats", nats_url, "--no-local-worker", "--playground", "--log-level", "warning"],
    )
    try:
        time.sleep(0.5)
        head.start()
        began = time.perf_counter()
        # (in a thread of its own: Playwright's sync API holds an event loop in this one)
        with ThreadPoolExecutor(1) as pool:
            last = pool.submit(asyncio.run, write_history(nats_url, runs)).result()
        wait_folded(head.url, last)
        rows = [(f"runs in history (written and folded in {time.perf_counter() - began:.0f} s)", f"{runs:,}")]
        return rows + first_page(browser, head.url, loads)
    finally:
        head.stop()
        server.terminate()
        server.wait(timeout=30)


# ---- 2. a run page during a wide fan-out ---------------------------------------------------------
def frame_stats(frames: list[float], start: float, end: float) -> tuple[list[float], int]:
    inside = [f for f in frames if start <= f <= end]
    gaps = [b - a for a, b in itertools.pairwise(inside)]
    return gaps, len(inside)


def one_fanout(browser: Any, client: MaClient, url: str, tasks: int, root: Path, i: int) -> dict[str, Any]:
    opened = root / f"gate-{i}"
    wf = client.create_workflow()
    g = wf.add_task(gate, inputs={"path": str(opened)})
    for _ in range(tasks - 1):
        wf.add_task(noop, inputs={"n": g.outputs["n"]})
    run_id = wf.run()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(PROBE)
    page = context.new_page()
    page.set_default_timeout(300_000)
    page.goto(f"{url}/playground/runs/{run_id}")
    page.wait_for_selector("[data-stream='live']")
    page.wait_for_selector(".react-flow__node")
    page.wait_for_timeout(1000)  # what the opening left to do settles
    start = page.evaluate("performance.now()")
    release = time.perf_counter()
    opened.touch()
    page.wait_for_function(
        "(n) => { const c = document.querySelector(\"[data-count='succeeded']\");"
        " return c !== null && c.textContent === 'succeeded ' + n; }",
        arg=tasks,
    )
    seen = time.perf_counter() - release
    seen_at = time.time()
    end = page.evaluate("performance.now()")
    probe = page.evaluate("window.__probe")
    context.close()
    # (the read models may fold the end after the page showed it: the page follows the live feed)
    finished = client.wait_run(run_id, timeout=300)
    assert finished["state"] == "succeeded", finished
    opening_gaps, _ = frame_stats(probe["frames"], 0, start)
    gaps, frames = frame_stats(probe["frames"], start, end)
    long_open = [d for s, d in probe["longtasks"] if s < start]
    long_fan = [d for s, d in probe["longtasks"] if start <= s <= end]
    return {
        "seen_s": seen,
        "after_end_s": seen_at - finished["finished_at_ms"] / 1000,
        "gaps": gaps,
        "frames": frames,
        "long_fan": long_fan,
        "long_open": long_open,
        "opening_gaps": opening_gaps,
    }


def fanout_bench(browser: Any, root: Path, tasks: int, fanouts: int) -> list[tuple[str, str]]:
    head = LocalHead(root / "fanout", extra=["--playground", "--log-level", "warning"])
    rows: list[tuple[str, str]] = []
    try:
        head.start(min_nodes=1)
        client = MaClient(head.url)
        for i in range(fanouts):
            r = one_fanout(browser, client, head.url, tasks, root, i)
            longest = max(r["long_fan"], default=0.0)
            rows += [
                (
                    f"fan-out {i + 1}: gate opened -> page shows {tasks:,} succeeded",
                    f"{r['seen_s']:.1f} s ({r['after_end_s']:+.2f} s after the run's end)",
                ),
                (
                    f"fan-out {i + 1}: long tasks during it (> 50 ms): count, longest (target <= 200 ms)",
                    f"{len(r['long_fan'])}, {longest:.0f} ms",
                ),
                (
                    f"fan-out {i + 1}: frame interval p50 / p99 / max ({r['frames']} frames)",
                    f"{statistics.median(r['gaps']):.1f} / {pct(r['gaps'], 0.99):.1f} / {max(r['gaps']):.0f} ms",
                ),
                (
                    f"fan-out {i + 1}: opening the page ({tasks:,}-task DAG): long tasks, longest; "
                    "longest frame interval",
                    f"{len(r['long_open'])}, {max(r['long_open'], default=0.0):.0f} ms; "
                    f"{max(r['opening_gaps'], default=0.0):.0f} ms",
                ),
            ]
    finally:
        head.stop()
    return rows


# ---- the README's screenshot ---------------------------------------------------------------------
@task
def fetch_orders(day: str = ""):
    return {"rows": [{"id": i, "amount": 10 * i} for i in range(1, 6)], "day": day}


@task
def clean(rows: list | None = None):
    return {"rows": [r for r in rows or [] if r["amount"] > 10]}


@task
def totals(rows: list | None = None):
    return {"total": sum(r["amount"] for r in rows or [])}


@task
def currency(rows: list | None = None):
    rates = {"EUR": 0.92}
    return {"eur": [r["amount"] * rates["USD"] for r in rows or []]}


@task
def top_customers(rows: list | None = None):
    return {"top": sorted(rows or [], key=lambda r: -r["amount"])[:3]}


@task
def report(total: int = 0, top: list | None = None, eur: list | None = None):
    return {"text": f"{total} from {len(top or [])} customers"}


def screenshot(browser: Any, root: Path, out: Path) -> None:
    head = LocalHead(root / "shot", extra=["--playground", "--log-level", "warning"])
    try:
        head.start(min_nodes=1)
        client = MaClient(head.url)
        wf = client.create_workflow()
        f = wf.add_task(fetch_orders, inputs={"day": "2026-12-05"})
        c = wf.add_task(clean, inputs={"rows": f.outputs["rows"]})
        t = wf.add_task(totals, inputs={"rows": c.outputs["rows"]})
        x = wf.add_task(currency, inputs={"rows": c.outputs["rows"]})
        k = wf.add_task(top_customers, inputs={"rows": c.outputs["rows"]})
        wf.add_task(
            report, inputs={"total": t.outputs["total"], "top": k.outputs["top"], "eur": x.outputs["eur"]}
        )
        run_id = wf.run()
        client.wait_run(run_id, timeout=120)
        context = browser.new_context(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{head.url}/playground/runs/{run_id}")
        node = page.locator(".react-flow__node[aria-label^='currency:']")
        node.wait_for()
        page.wait_for_selector("[data-stream]")
        node.click()
        page.wait_for_selector(".run-side .traceback, .run-side pre", timeout=30_000)
        page.wait_for_timeout(800)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        context.close()
    finally:
        head.stop()
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB (run {run_id})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--fanouts", type=int, default=3)
    parser.add_argument("--only", choices=["console", "fanout"], default=None)
    parser.add_argument("--screenshot", type=Path, default=None, help="Only make the run page's screenshot.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="maze-bench-playground-"))
    rows: list[tuple[str, str]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            try:
                if args.screenshot:
                    screenshot(browser, root, args.screenshot)
                    return
                load = os.getloadavg()[0]
                if args.only in (None, "console"):
                    rows += console_bench(browser, root, args.runs, args.loads)
                if args.only in (None, "fanout"):
                    rows += fanout_bench(browser, root, args.tasks, args.fanouts)
                rows.append(
                    (
                        "load average (1 min) before / after",
                        f"{load:.1f} / {os.getloadavg()[0]:.1f}",
                    )
                )
            finally:
                browser.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if rows:
        print_rows(
            f"playground: first page with {args.runs:,} runs, a {args.tasks:,}-task fan-out (headless chromium)",
            rows,
        )


if __name__ == "__main__":
    main()
