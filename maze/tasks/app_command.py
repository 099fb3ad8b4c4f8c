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
  conda or no environment of the name given, or what the client sent is not an environment
  (a hash that is not a sha256); retryable when making the environment, or asking conda where
  its environments are, failed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maze.core import attempt_context
from maze.core.errors import TaskFailure
from maze.sdk.app_spec import CONDA_NAME_RE, conda_hash
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
# what the client sends is checked here again: the hash names a directory this worker may remove
# and remake, the name is an argument of `conda run`
CONDA_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
CONDA_INFO_TIMEOUT_S = 120


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
    """Where the environment of the spec whose sha256 is `env_hash` is kept on this node. Raises
    TaskFailure (environment_error, not retryable) for what is not a sha256: the directory is
    removed and remade, so nothing sent may lead it out of `.conda`."""
    if not CONDA_HASH_RE.fullmatch(env_hash):
        raise TaskFailure(
            "environment_error",
            f"the app's conda environment hash {env_hash[:80]!r} is not a sha256 (64 hex digits)",
            retryable=False,
        )
    return work_root / CONDA_DIR / f"maze-{env_hash[:16]}"


def _conda_failure(message: str) -> TaskFailure:
    return TaskFailure("environment_error", message, retryable=True)


def conda_envs_dirs(conda: str, env: Mapping[str, str]) -> list[Path]:
    """The directories conda looks a named environment up in (`conda info --json`'s envs_dirs).
    Raises TaskFailure (environment_error, retryable) when conda cannot say."""
    try:
        done = subprocess.run(
            [conda, "info", "--json"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CONDA_INFO_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _conda_failure(f"`conda info --json` could not be run: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        raise _conda_failure(f"`conda info --json` exited with code {done.returncode}: {tail}")
    try:
        dirs = json.loads(done.stdout)["envs_dirs"]
        return [Path(str(d)) for d in dirs]
    except (ValueError, KeyError, TypeError) as exc:
        raise _conda_failure(f"`conda info --json` gave no envs_dirs: {exc!r}") from exc


def check_named_env(conda: str, name: str, env: Mapping[str, str], node_id: str) -> None:
    """That `conda run -n NAME` will find the environment, looked up as conda does (`base`/`root`,
    else a directory NAME in one of its envs_dirs): a missing one is an `environment_error`, not
    the command's own `exited with code 1`. Raises TaskFailure."""
    if not CONDA_NAME_RE.fullmatch(name):
        raise TaskFailure(
            "environment_error", f"{name[:80]!r} is not a conda environment name", retryable=False
        )
    if name in ("base", "root"):
        return
    dirs = conda_envs_dirs(conda, env)
    if not any((d / name).is_dir() for d in dirs):
        raise TaskFailure(
            "environment_error",
            f"conda environment {name!r} does not exist on node {node_id or '?'} (looked for in "
            f"{', '.join(map(str, dirs)) or 'no envs_dirs'}); make it there, or give env.conda an "
            "environment spec to have it made",
            retryable=False,
        )


def ensure_conda_env(conda: str, prefix: Path, spec: dict[str, Any], env: Mapping[str, str]) -> bool:
    """Make the environment at `prefix` from `spec` unless a whole one is there already (one
    attempt at a time per environment, by a lock file). True when it was made now."""
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
        check_named_env(exe, str(conda["name"]), env, node_id)
        return [exe, "run", "--no-capture-output", "-n", str(conda["name"]), *argv]
    if not isinstance(conda.get("spec"), dict):
        raise TaskFailure("environment_error", "the app's conda environment spec is not a mapping", False)
    work_root = attempt_context.current().get("work_root")
    if not work_root:
        raise TaskFailure(
            "environment_error", "no work root to keep the conda environment in", retryable=False
        )
    env_hash = str(conda.get("hash", ""))
    prefix = conda_prefix(Path(work_root), env_hash)
    if conda_hash(conda["spec"]) != env_hash:  # else one app's spec could be made at another's prefix
        raise TaskFailure(
            "environment_error", "the app's conda environment hash is not its spec's sha256", False
        )
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
