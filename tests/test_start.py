"""Starting and stopping heads and workers: every failure that cannot heal ends the process with one
line naming what to change (exit 1); one that heals by itself is waited out, saying so; SIGTERM and
SIGINT stop a head or a worker cleanly in every state, start-up included."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import HeadProcess, NatsServer, free_port, wait_until


def _maze(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maze", "start", *args], capture_output=True, text=True, timeout=timeout
    )


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stdout
    return lines[0]


def test_a_second_head_on_one_machine_names_the_nats_port_it_cannot_have(tmp_path: Path) -> None:
    """Two heads started with only --port and --data-dir differing: the second's embedded NATS
    cannot have the first's port. It says so in one line (exit 1) instead of talking to the first
    head's server and looping on `Authorization Violation`."""
    first = HeadProcess(tmp_path / "first")
    first.start()
    try:
        line = _one_error_line(
            _maze(
                "--head",
                "--port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "second"),
                "--nats-port",
                str(first.nats_port),
            )
        )
        assert f"NATS cannot listen on 127.0.0.1:{first.nats_port}" in line and "--nats-port" in line
        assert "Authorization Violation" not in (tmp_path / "first" / "head.log").read_text()
    finally:
        first.stop()


def test_a_data_dir_held_by_another_head_is_refused(tmp_path: Path) -> None:
    first = HeadProcess(tmp_path / "data")
    first.start()
    try:
        line = _one_error_line(
            _maze("--head", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"))
        )
        assert f"the data dir {tmp_path / 'data'} is in use by another head" in line and "--data-dir" in line
    finally:
        first.stop()


def test_credentials_a_nats_server_refuses_end_the_head_at_once(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", token="right")
    server.start()
    try:
        started = time.monotonic()
        line = _one_error_line(
            _maze(
                "--head",
                "--port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "head"),
                "--nats",
                f"nats://wrong@127.0.0.1:{server.port}",
                timeout=30,
            )
        )
        assert "refused this process's credentials" in line
        assert time.monotonic() - started < 20, "no reconnect loop"
    finally:
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_head_waiting_for_its_nats_stops_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    """A head whose NATS cluster is not up yet waits for it (a failure that heals by itself), says
    so, and still stops at once on SIGTERM or SIGINT."""
    log_path = tmp_path / "head.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "maze",
                "start",
                "--head",
                "--port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "head"),
                "--nats",
                f"nats://127.0.0.1:{free_port()}",
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "nats.waiting_for_server" in log_path.read_text(), timeout=30)
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
        assert "head.stopped_during_start" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_worker_waiting_for_its_head_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maze",
            "start",
            "--worker",
            "--addr",
            f"127.0.0.1:{free_port()}",
            "--log-level",
            "info",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(2)  # it waits for the head, saying so
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert "worker.waiting_for_head" in out
    finally:
        if proc.poll() is None:
            proc.kill()
