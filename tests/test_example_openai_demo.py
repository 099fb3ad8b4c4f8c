"""examples/react_workflow/openai_demo.py: its usage and its one-line refusals (no model needed).

Its agent loop needs a model and `create_react_workflow`; this checks what it does before that."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "react_workflow" / "openai_demo.py"


def run_demo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAZE_LLM_")}
    return subprocess.run(
        [sys.executable, str(DEMO), *args], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_help() -> None:
    done = run_demo("--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "MAZE_LLM_BASE_URL" in done.stdout and "--max-steps" in done.stdout


def test_missing_settings_are_one_line() -> None:
    done = run_demo()
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "openai_demo: set MAZE_LLM_BASE_URL (the server's URL, e.g. https://api.openai.com/v1); "
        "MAZE_LLM_MODEL (the model's name, e.g. gpt-4o-mini)"
    ]
    done = run_demo(MAZE_LLM_BASE_URL="http://127.0.0.1:1/v1")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "openai_demo: set MAZE_LLM_MODEL (the model's name, e.g. gpt-4o-mini)"
    ]


def test_a_bad_setting_is_one_line() -> None:
    done = run_demo(MAZE_LLM_BASE_URL="localhost:8001", MAZE_LLM_MODEL="m")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "openai_demo: openai_llm_task: base_url must be an http:// or https:// URL"
    ]
