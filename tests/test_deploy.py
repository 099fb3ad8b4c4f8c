"""compose.yaml is a valid multi-node deployment (checked by docker-compose without a daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_file_is_valid() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAZE_TOKEN": "a-test-secret"},
    )
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == {"nats-1", "nats-2", "nats-3", "head", "worker-1", "worker-2"}


def test_compose_head_and_workers_use_flags_the_cli_accepts() -> None:
    """Every flag compose.yaml passes to `maze start` exists (a typo would crash-loop the service)."""
    import re
    import sys

    help_text = subprocess.run(
        [sys.executable, "-m", "maze", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "TERM": "dumb"},
    ).stdout
    flags = set(re.findall(r'"(--[a-z-]+)"', (ROOT / "compose.yaml").read_text()))
    assert {"--head", "--worker", "--agent", "--replicas", "--nats"} <= flags
    for flag in flags:
        assert flag in help_text, flag
