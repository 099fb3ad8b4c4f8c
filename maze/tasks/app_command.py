"""The one task of an app run (a maze.yaml, README "maze.yaml applications"): runs the app's command
in the attempt's directory (its workspace staged there), and fails the attempt when it fails.

- No shell unless the spec says `shell: true` (then `/bin/sh -c COMMAND`): the argv is run as it
  is, so `;`, `|` or `$VAR` in it are plain characters.
- The environment is built, not inherited: the allowlisted variables of the worker's
  (ENV_ALLOWED), the spec's `env.vars`, then the attempt's `MAZE_*` context. Nothing else of the
  worker's environment (no MAZE_TOKEN, no NATS address) reaches the command.
- Its output is the task's output: the command inherits the task process's stdout and stderr,
  which the worker captures line by line into the run's logs.
- A non-zero exit fails the attempt with error type `user_code` (retryable: `retries.on:
  [user_code]` retries it); a command that cannot start fails `user_code` too. A conda
  environment that cannot be had fails `environment_error`: not retryable when the node has no
  conda, retryable when making the environment failed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maze.core import attempt_context
from maze.core.errors import TaskFailure
from maze.sdk.task import task

# CUDA_VISIBLE_DEVICES: the cards the attempt was given (set per attempt by the task process)
ENV_ALLOWED = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "CUDA_VISIBLE_DEVICES",
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
CONDA_DIR = ".conda"  # under the worker's work root: the environments apps' specs made
READY_MARK = ".maze-ready"  # written once an environment was made whole


def app_env(
    environ: Mapping[str, str], variables: Mapping[str, str], context: Mapping[str, str]
) -> dict[str, str]:
    """The command's environment: the allowlist (and `LC_*`) of `environ`, then the spec's vars,
    then the `MAZE_*` context (`context` maps each MAZE_ variable to its value)."""
    env = {key: value for key, value in environ.items() if key in ENV_ALLOWED or key.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update({str(k): str(v) for k, v in variables.items()})
    env.update(context)
    return env


def maze_context(app_name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The attempt's MAZE_* variables (maze/core/attempt_context.py; a sandbox's MAZE_SANDBOX)."""
    ctx = attempt_context.current()
    out = {
        "MAZE_RUN_ID": ctx.get("run_id", ""),
        "MAZE_TASK_ID": ctx.get("task_id", ""),
        "MAZE_ATTEMPT": ctx.get("attempt", ""),
        "MAZE_NODE_ID": ctx.get("node_id", ""),
        "MAZE_APP_NAME": app_name,
    }
    if environ.get("MAZE_SANDBOX"):
        out["MAZE_SANDBOX"] = environ["MAZE_SANDBOX"]
    return out


def find_conda(env: Mapping[str, str]) -> str | None:
    """conda (or mamba/micromamba-free conda only) on the command's PATH, else $CONDA_EXE."""
    found = shutil.which("conda", path=env.get("PATH"))
    if found is None and os.environ.get("CONDA_EXE") and os.access(os.environ["CONDA_EXE"], os.X_OK):
        found = os.environ["CONDA_EXE"]
    return found


def conda_prefix(work_root: Path, env_hash: str) -> Path:
    return work_root / CONDA_DIR / f"maze-{env_hash[:16]}"


def ensure_conda_env(conda: str, prefix: Path, spec: dict[str, Any], env: Mapping[str, str]) -> bool:
    """Make the environment at `prefix` from `spec` unless a whole one is there already (one
    attempt at a time per environment, by a lock file). True when it was made now."""
    import json

    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / f"{prefix.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (prefix / READY_MARK).exists():
            return False
        shutil.rmtree(prefix, ignore_errors=True)  # a half-made one, from an attempt killed midway
        spec_file = prefix.parent / f"{prefix.name}.yml"
        spec_file.write_text(json.dumps({k: v for k, v in spec.items() if k != "name"}))  # JSON is YAML
        print(f"[maze] making conda environment {prefix} (once per node)", flush=True)
        done = subprocess.run(
            [conda, "env", "create", "--yes", "--quiet", "-p", str(prefix), "-f", str(spec_file)],
            env=dict(env),
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            shutil.rmtree(prefix, ignore_errors=True)
            raise TaskFailure(
                "environment_error",
                f"conda could not make the environment {prefix} (exit code {done.returncode}; its "
                "output is in the task's logs)",
                retryable=True,
            )
        (prefix / READY_MARK).write_text("")
        return True


def with_conda(argv: list[str], conda: dict[str, Any], env: Mapping[str, str], node_id: str) -> list[str]:
    """`argv` run inside the app's conda environment (`conda run`), made first if need be."""
    exe = find_conda(env)
    if exe is None:
        raise TaskFailure(
            "environment_error",
            f"conda is not installed on node {node_id or '?'} (the app asks for env.conda; no "
            f"'conda' on PATH={env.get('PATH', '')!r} nor $CONDA_EXE)",
            retryable=False,
        )
    if "name" in conda:
        return [exe, "run", "--no-capture-output", "-n", str(conda["name"]), *argv]
    work_root = attempt_context.current().get("work_root")
    if not work_root:
        raise TaskFailure(
            "environment_error", "no work root to keep the conda environment in", retryable=False
        )
    prefix = conda_prefix(Path(work_root), str(conda["hash"]))
    ensure_conda_env(exe, prefix, dict(conda["spec"]), env)
    return [exe, "run", "--no-capture-output", "-p", str(prefix), *argv]


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@task
def app_command(app: dict[str, Any]) -> dict[str, Any]:
    """`app`: {"name", "argv", "vars", "conda"} as maze/sdk/app.py sends them."""
    name = str(app["name"])
    context = maze_context(name, os.environ)
    env = app_env(os.environ, app.get("vars") or {}, context)
    argv = [str(a) for a in app["argv"]]
    if app.get("conda"):
        argv = with_conda(argv, app["conda"], env, context["MAZE_NODE_ID"])
    started = time.monotonic()
    try:
        # stdout and stderr are the task process's: captured into the run's logs line by line
        done = subprocess.run(argv, env=env, cwd=os.getcwd(), stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise TaskFailure(
            "user_code",
            f"app {name!r}: command {argv[0]!r} not found on node {context['MAZE_NODE_ID']} "
            f"(PATH={env.get('PATH', '')!r})",
            retryable=True,
        ) from exc
    except PermissionError as exc:
        raise TaskFailure(
            "user_code", f"app {name!r}: command {argv[0]!r} cannot be run: {exc}", True
        ) from exc
    duration = round(time.monotonic() - started, 3)
    if done.returncode != 0:
        raise TaskFailure(
            "user_code",
            f"app {name!r}: command {_exit_text(done.returncode)} after {duration:g}s",
            retryable=True,
            exit_code=done.returncode,
        )
    return {"exit_code": 0, "duration_s": duration, "command": argv}
