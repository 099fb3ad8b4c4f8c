"""The README's first command, `maze demo`: a new user sees the demo run in the Playground's Runs
console. The demo keeps its head up with `--playground` after the run, prints the run's page, and
stops on Ctrl-C (or SIGTERM); `--no-playground` stops at once, as it used to, and so does a demo
started without a terminal (a script, CI) unless given `--playground`."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maze.sdk.local_head import free_port
from tests.helpers import wait_until
from tests.test_playground import _chromium

URL_LINE = re.compile(r"The run in the Playground: (http://127\.0\.0\.1:\d+)/playground/runs/(run_\w+)")


class Demo:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "maze",
                "demo",
                "--port",
                str(self.port),
                "--nats-port",
                str(free_port()),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.seen)
                continue
            self.seen.append(line)
            if found := pattern.search(line):
                return found
        raise AssertionError(f"no line matching {pattern.pattern}:\n{''.join(self.seen)}")

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, str, str]]:
    started = Demo(tmp_path_factory.mktemp("demo"), "--playground")
    try:
        found = started.wait_for(URL_LINE)
        yield started, found.group(1), found.group(2)
    finally:
        if started.proc.poll() is None:
            started.proc.send_signal(signal.SIGINT)
            started.proc.wait(timeout=60)


def test_the_demo_prints_the_playground_and_its_run(demo: tuple[Demo, str, str]) -> None:
    proc, url, run_id = demo
    out = proc.output()
    assert f"Playground: {url}/playground/" in out  # the head's own line
    assert "demo finished: succeeded" in out and "Ctrl-C stops the head" in out

    def listed() -> list[tuple[str, str]]:
        return [(r["run_id"], r["state"]) for r in httpx.get(f"{url}/runs").json()]

    # the read models follow the log a moment after the run's end reached the demo
    wait_until(lambda: listed() == [(run_id, "succeeded")], timeout=30)
    page = httpx.get(f"{url}/playground/runs/{run_id}")
    assert page.status_code == 200 and '<div id="root">' in page.text
    assert proc.proc.poll() is None  # still serving


def test_the_demo_run_is_in_the_runs_console(demo: tuple[Demo, str, str]) -> None:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    _, url, run_id = demo
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page: Any = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{url}/")  # `/` leads to the console
            row = page.locator(f"tr[data-run='{run_id}']")
            row.wait_for()
            assert row.get_attribute("data-state") == "succeeded"
            assert run_id in row.inner_text() and "2/2" in row.inner_text()  # both tasks succeeded
        finally:
            browser.close()


def test_ctrl_c_stops_the_demo_and_its_head(tmp_path: Path) -> None:
    started = Demo(tmp_path / "d", "--playground")
    found = started.wait_for(URL_LINE)
    started.proc.send_signal(signal.SIGTERM)  # as Ctrl-C does: the demo stops its head
    assert started.proc.wait(timeout=60) == 0, started.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{found.group(1)}/healthz", timeout=2)


def test_no_playground_stops_at_once(tmp_path: Path) -> None:
    started = Demo(tmp_path / "d", "--no-playground")
    assert started.proc.wait(timeout=120) == 0
    out = started.output()
    assert "demo finished: succeeded" in out
    assert "The run in the Playground" not in out


def test_without_a_terminal_the_demo_stops_at_once_and_says_how_to_keep_it_up(tmp_path: Path) -> None:
    """Run from a script (no terminal: stdout is a pipe here), the demo never waits for a Ctrl-C
    nobody will send."""
    started = Demo(tmp_path / "d")
    assert started.proc.wait(timeout=120) == 0, started.output()
    out = started.output()
    assert "demo finished: succeeded" in out and "maze demo --playground" in out
    assert "The run in the Playground" not in out
