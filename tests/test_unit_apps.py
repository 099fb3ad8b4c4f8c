"""maze.yaml validation (every error with its field path), artifact patterns, an app command's
environment and its conda handling: pure functions, and a conda stand-in script for the one
path that needs a `conda` executable (the real one is not installed here)."""

from __future__ import annotations

import ast
import contextlib
import os
import stat
import sys
import threading
from fnmatch import fnmatchcase
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maze.api.submit import TaskSubmission, _check_task
from maze.core import attempt_context
from maze.core.errors import TaskFailure, ValidationError
from maze.core.globs import MAX_PATTERN_SEGMENTS, MAX_PATTERNS, matcher, pattern_problem
from maze.core.task_machine import KNOWN_ERROR_TYPES
from maze.sdk.app_spec import (
    MAX_SPEC_BYTES,
    AppSpec,
    AppSpecError,
    _convert_error,
    conda_hash,
    load_app,
    parse_app,
    validate,
)
from maze.sdk.task import task
from maze.tasks.app_command import READY_MARK, app_env, conda_prefix, with_conda
from maze.workers.files import _regular_files


def _errors(doc: object, base: Path) -> list[str]:
    return validate(doc, base)[0]


def _ok(base: Path, **fields: object) -> dict[str, object]:
    return {"name": "demo", "command": "python train.py", **fields}


def test_the_seed_readme_spec_is_valid(tmp_path: Path) -> None:
    text = b"""
name: gpu-demo
command: python train.py
workspace: .
resources: {cpu: 4, cpu_mem: 1024, gpu: 1, gpu_mem: 0}
env:
  conda: maze
  vars: {DATASET: sample}
artifacts:
  - outputs/
timeout_seconds: 1800
retries: {max: 1, backoff_seconds: 5, on: [node_lost, resource_unavailable]}
"""
    app = parse_app(text, tmp_path)
    assert app.argv == ["python", "train.py"]
    assert app.spec.retries.on == ["node_lost", "resource_unavailable"]  # `on` is a key, not True
    assert app.spec.env.vars == {"DATASET": "sample"}
    assert app.conda == {"name": "maze"}
    assert app.workspace_dir == tmp_path.resolve()
    assert app.spec.resources.cpu == 4 and app.spec.timeout_seconds == 1800


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"resources": {"cpu": 0}}, "resources.cpu: must be > 0, got 0"),
        ({"resources": {"cpu": "four"}}, "resources.cpu: must be a number, got string 'four'"),
        ({"resources": {"cpu_mem": 1.5}}, "resources.cpu_mem: must be a whole number"),
        ({"resources": {"gpu": -1}}, "resources.gpu: must be >= 0, got -1"),
        ({"resources": {"gpu": 1.5}}, "resources: resource 'gpu' above 1 must be a whole number"),
        ({"resources": {"tpu": 1}}, "resources.tpu: unknown field"),
        ({"resources": [1]}, "resources: must be a mapping, got list"),
        ({"retries": {"on": ["node_lost", "foo"]}}, "retries.on[1]: unknown error type 'foo'"),
        ({"retries": {"max": -1}}, "retries.max: must be >= 0, got -1"),
        ({"retries": {"max": 1.5}}, "retries.max: must be a whole number"),
        ({"retries": {"backoff_seconds": "5s"}}, "retries.backoff_seconds: must be a number"),
        ({"retries": {"on": "user_code"}}, "retries.on: must be a list of error types"),
        ({"retries": {"tries": 2}}, "retries.tries: unknown field"),
        ({"workspace": "x"}, "workspace: directory ./x does not exist"),
        ({"workspace": 3}, "workspace: must be a directory (a string), got int"),
        ({"timeout_seconds": 0}, "timeout_seconds: must be > 0, got 0"),
        ({"timeout_seconds": "1h"}, "timeout_seconds: must be a number, got string '1h'"),
        ({"env": {"vars": {"MAZE_RUN_ID": "x"}}}, "env.vars.MAZE_RUN_ID: names starting with MAZE_"),
        ({"env": {"vars": {"1X": "x"}}}, "env.vars.1X: is not a variable name"),
        ({"env": {"vars": {"FLAG": True}}}, "env.vars.FLAG: must be a string or a number, got boolean True"),
        ({"env": {"vars": ["A=1"]}}, "env.vars: must be a mapping of NAME: value, got list"),
        ({"env": {"conda": 3}}, "env.conda: must be an environment name, a .yml file or a mapping"),
        ({"env": {"conda": "env.yml"}}, "env.conda: environment file env.yml does not exist"),
        ({"env": {"conda": {"channels": ["x"]}}}, "env.conda.dependencies: is required"),
        ({"env": {"conda": "bad name"}}, "env.conda: 'bad name' is not an environment name"),
        ({"env": {"conda": "-n"}}, "env.conda: '-n' is not an environment name"),
        ({"env": {"python": "3.11"}}, "env.python: unknown field"),
        ({"artifacts": ["/etc/passwd"]}, "artifacts[0]: '/etc/passwd' must be relative"),
        ({"artifacts": ["out/../x"]}, "artifacts[0]: 'out/../x' must not hold '..'"),
        ({"artifacts": ["../x"]}, "artifacts[0]: '../x' must not hold '..'"),
        ({"artifacts": ["~/x"]}, "artifacts[0]: '~/x' must be relative"),
        ({"workspace": "/"}, "workspace: / must be relative to the maze.yaml's directory"),
        ({"workspace": "../.."}, "workspace: ../.. leads out of the maze.yaml's directory"),
        ({"workspace": "sub/../../x"}, "workspace: sub/../../x leads out of the maze.yaml's directory"),
        (
            {"env": {"conda": "../env.yml"}},
            "env.conda: environment file ../env.yml must be in the maze.yaml's",
        ),
        ({"artifacts": "outputs/"}, "artifacts: must be a list, got string"),
        ({"artifacts": [3]}, "artifacts[0]: must be a string, got int"),
        ({"shell": "yes"}, "shell: must be true or false, got string 'yes'"),
        ({"sandbox": 1}, "sandbox: must be true or false, got int 1"),
        ({"network": True}, "network: applies to sandboxed apps only"),
        ({"sandbox": True, "env": {"conda": "maze"}}, "env.conda: cannot be used with sandbox: true"),
        ({"command": ""}, "command: must not be empty"),
        ({"command": []}, "command: must not be an empty list"),
        ({"command": ["python", 3]}, "command[1]: must be a string, got int"),
        ({"command": "python 'unclosed"}, "command: cannot be split into arguments: No closing quotation"),
        ({"command": "''"}, "command: the program must not be empty (the command splits into [''])"),
        ({"command": "'' train.py"}, "command: the program must not be empty"),
        ({"sandbox": True, "resources": {"gpu": 1}}, "resources: a sandboxed task cannot have a GPU"),
        ({"sandbox": True, "resources": {"gpu_mem": 512}}, "resources: a sandboxed task cannot have a GPU"),
        ({"resources": {"cpu_mem": 10**23}}, "resources.cpu_mem: must be at most 9007199254740992"),
        ({"command": ["echo", "x"], "shell": True}, "command: with shell: true the command is one string"),
        ({"command": {"run": "x"}}, "command: must be a string or a list of strings, got mapping"),
        ({"name": "has space"}, "name: must be 1-64 letters"),
        ({"description": 3}, "description: must be a string, got int"),
        ({"comand": "x"}, "comand: unknown field"),
    ],
)
def test_each_field_error_names_its_path(tmp_path: Path, fields: dict[str, object], expected: str) -> None:
    errors = _errors(_ok(tmp_path, **fields), tmp_path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors


def test_whole_numbers_written_as_floats_are_whole_numbers(tmp_path: Path) -> None:
    text = b"name: a\ncommand: x\nresources: {cpu_mem: 100.0, gpu_mem: 0.0}\nretries: {max: 2.0}\n"
    app = parse_app(text, tmp_path)
    assert (app.spec.resources.cpu_mem, app.spec.resources.gpu_mem, app.spec.retries.max) == (100, 0, 2)
    assert all(type(v) is int for v in (app.spec.resources.cpu_mem, app.spec.retries.max))
    with pytest.raises(AppSpecError) as caught:
        parse_app(b"name: a\ncommand: x\nresources: {cpu_mem: 1.5}\nretries: {max: 2.5}\n", tmp_path)
    assert caught.value.errors == [
        "resources.cpu_mem: must be a whole number, got float 1.5",
        "retries.max: must be a whole number, got float 2.5",
    ]


def test_a_conversion_error_validation_missed_still_names_its_field() -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert({}, AppSpec)
    assert _convert_error(caught.value) == "(document): Object missing required field `name`"
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert({"name": "a", "command": "x", "retries": {"max": 1.5}}, AppSpec)
    assert _convert_error(caught.value) == "retries.max: Expected `int`, got `float`"


def test_a_workspace_is_the_spec_directory_or_under_it_links_resolved(tmp_path: Path) -> None:
    base = tmp_path / "app"
    (base / "data" / "in").mkdir(parents=True)
    (base / "home").symlink_to(Path.home())  # a link out: refused, though it names a directory
    (base / "inner").symlink_to(base / "data")  # a link that stays inside: fine
    assert (
        parse_app(b"name: a\ncommand: x\nworkspace: data/in\n", base).workspace_dir
        == (base / "data" / "in").resolve()
    )
    assert (
        parse_app(b"name: a\ncommand: x\nworkspace: inner\n", base).workspace_dir == (base / "data").resolve()
    )
    assert parse_app(b"name: a\ncommand: x\nworkspace: data/..\n", base).workspace_dir == base.resolve()
    for workspace in ("home", str(tmp_path), "..", "data/../.."):
        errors = _errors(_ok(base, workspace=workspace), base)
        assert len(errors) == 1 and errors[0].startswith(f"workspace: {workspace} "), errors


def test_required_fields_and_a_document_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert _errors({}, tmp_path) == [
        "name: is required",
        "command: is required (a string, or a list of arguments)",
    ]
    assert _errors(["name"], tmp_path) == ["(document): must be a mapping of fields (name, command, ...)"]


def test_every_error_is_reported_not_only_the_first(tmp_path: Path) -> None:
    text = b"""
name: demo
command: python train.py
workspace: ./missing
resources: {cpu: 0}
retries: {max: 1, on: [node_lost, foo]}
extra: 1
"""
    with pytest.raises(AppSpecError) as caught:
        parse_app(text, tmp_path)
    assert caught.value.errors == [
        "extra: unknown field (known: name, command, description, workspace, resources, env, artifacts, "
        "timeout_seconds, retries, shell, sandbox, network)",
        f"workspace: directory ./missing does not exist (relative to {tmp_path})",
        "resources.cpu: must be > 0, got 0",
        "retries.on[1]: unknown error type 'foo' (known: artifact_error, environment_error, "
        "event_store_refused, invalid_input, invalid_result, node_lost, out_of_memory, payload_too_large, "
        "process_exited, process_limit, protocol_error, resource_unavailable, sandbox_error, "
        "serialization_error, timed_out, timeout, user_code, worker_error)",
    ]
    assert caught.value.details["errors"] == caught.value.errors


def test_bad_yaml_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(AppSpecError) as caught:
        parse_app(b"name: [unclosed\n", tmp_path)
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith("(document): not valid YAML")


def test_commands_shell_and_yaml_booleans(tmp_path: Path) -> None:
    app = parse_app(b"name: a\ncommand: python -c 'print(1); print(2)' \"$HOME\"\n", tmp_path)
    assert app.argv == ["python", "-c", "print(1); print(2)", "$HOME"]  # no shell: split, literal
    app = parse_app(b"name: a\ncommand: echo $HOME; echo x\nshell: true\n", tmp_path)
    assert app.argv == ["/bin/sh", "-c", "echo $HOME; echo x"]
    app = parse_app(b"name: a\ncommand: [echo, 'a b']\nenv: {vars: {A: yes, N: 3}}\n", tmp_path)
    assert app.argv == ["echo", "a b"]
    assert app.spec.env.vars == {"A": "yes", "N": 3}  # YAML 1.1's `yes` is a string here


def test_conda_specs_resolve_to_a_hash_of_their_content(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text(
        "name: x\nchannels: [conda-forge]\ndependencies: [python=3.11]\n"
    )
    from_file = parse_app(b"name: a\ncommand: x\nenv: {conda: environment.yml}\n", tmp_path).conda
    inline = parse_app(
        b"name: a\ncommand: x\nenv: {conda: {channels: [conda-forge], dependencies: [python=3.11]}}\n",
        tmp_path,
    ).conda
    assert from_file is not None and inline is not None
    assert from_file["hash"] == inline["hash"]  # the `name` does not count, the order of keys neither
    assert conda_hash({"dependencies": ["python=3.12"]}) != inline["hash"]


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("outputs/", ["outputs/a.txt", "outputs/d/b.bin"], ["outputs", "out.txt", "x/outputs/a"]),
        ("outputs", ["outputs", "outputs/a.txt"], ["outputs2/a"]),
        ("*.csv", ["a.csv"], ["d/a.csv", "a.csv.bak"]),
        ("**/*.log", ["a.log", "d/e/a.log"], ["a.txt"]),
        ("models/*/best.pt", ["models/m1/best.pt"], ["models/best.pt", "models/m1/x/best.pt"]),
        ("out*/", ["out1/a", "outputs/b/c"], ["out1"]),
    ],
)
def test_artifact_patterns(pattern: str, yes: list[str], no: list[str]) -> None:
    assert pattern_problem(pattern) is None
    matches = matcher([pattern])
    assert [p for p in yes if not matches(p)] == []
    assert [p for p in no if matches(p)] == []


def _reference_match(pattern: list[str], path: list[str]) -> bool:
    """The plain backtracking definition of a match (exponential in `**`: small inputs only)."""
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_reference_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], pattern[0]) and _reference_match(pattern[1:], path[1:])


@pytest.mark.timeout(20)
def test_patterns_with_many_globstars_on_a_deep_path_match_in_one_pass() -> None:
    # 10 `**` against a file 21 directories deep: the backtracking matcher took minutes here
    deep = "/".join(["d"] * 21) + "/file.txt"
    miss = "/".join(["**", "d"] * 10) + "/nomatch.txt"
    hit = "/".join(["**", "d"] * 10) + "/*.txt"
    assert pattern_problem(miss) is None and pattern_problem(hit) is None
    assert matcher([miss])(deep) is False
    assert matcher([hit])(deep) is True
    assert matcher([miss, "**/**/**/d/**/**/"])(deep) is True  # consecutive `**` are one
    assert matcher(["**/" * 40 + "e/"])(deep) is False


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.lists(st.sampled_from(["**", "*", "a", "b", "?", "[ab]", "a*"]), min_size=1, max_size=6),
    path=st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=1, max_size=6),
    dirs_only=st.booleans(),
)
def test_pattern_matching_agrees_with_the_backtracking_definition(
    pattern: list[str], path: list[str], dirs_only: bool
) -> None:
    last = len(path) - 1 if dirs_only else len(path)
    expected = any(_reference_match(pattern, path[:k]) for k in range(1, last + 1))
    text = "/".join(pattern) + ("/" if dirs_only else "")
    assert matcher([text])("/".join(path)) is expected


def test_patterns_are_capped_in_segments() -> None:
    assert pattern_problem("/".join(["a"] * MAX_PATTERN_SEGMENTS)) is None
    problem = pattern_problem("/".join(["**"] * (MAX_PATTERN_SEGMENTS + 1)))
    assert problem == f"has more than {MAX_PATTERN_SEGMENTS} segments"


def test_a_task_names_at_most_max_patterns_and_the_walk_keeps_what_they_match(tmp_path: Path) -> None:
    def f() -> None:
        return None

    with pytest.raises(ValidationError, match=f"artifacts holds {MAX_PATTERNS} patterns at most"):
        task(artifacts=[f"f{i}" for i in range(MAX_PATTERNS + 1)])(f)
    for rel in ("outputs/a.txt", "outputs/d/b.bin", "top.csv", "drop.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    kept = _regular_files(tmp_path, matcher(["outputs/", "*.csv"]))
    assert [rel for rel, _, _ in kept] == ["outputs/a.txt", "outputs/d/b.bin", "top.csv"]


def test_the_environment_is_an_allowlist_plus_vars_plus_context() -> None:
    worker = {
        "PATH": "/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "HOME": "/h",
        "MAZE_TOKEN": "t",
        "SECRET": "s",
    }
    worker |= {"PYTHONPATH": "/src", "NATS_URL": "nats://x", "CUDA_VISIBLE_DEVICES": "1"}
    env = app_env(worker, {"DATASET": "sample", "PATH": "/opt/bin"}, {"MAZE_RUN_ID": "run_1"})
    assert env == {
        "PATH": "/opt/bin",  # the spec's vars may set PATH
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "HOME": "/h",
        "CUDA_VISIBLE_DEVICES": "1",  # the cards the attempt was given
        "DATASET": "sample",
        "MAZE_RUN_ID": "run_1",
    }


def _fake_conda(directory: Path, envs_dir: Path | None = None) -> Path:
    """A stand-in for `conda` (not installed here) that does what Maze asks of it: `env create -p
    PREFIX -f FILE` makes PREFIX (counting the calls), `info --json` names `envs_dir` (none:
    it fails)."""
    script = directory / "conda"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        f"envs = {str(envs_dir) if envs_dir else None!r}\n"
        "if args == ['info', '--json']:\n"
        "    if envs is None:\n"
        "        sys.exit('CondaError: broken')\n"
        "    print(json.dumps({'envs_dirs': [envs, '/nonexistent/envs'], 'root_prefix': '/x'}))\n"
        "    sys.exit(0)\n"
        "if args[:2] == ['env', 'create']:\n"
        "    prefix = args[args.index('-p') + 1]\n"
        "    os.makedirs(prefix)\n"
        "    open(os.path.join(os.path.dirname(prefix), 'creates'), 'a').write('x')\n"
        "    sys.exit(0)\n"
        "sys.exit(2)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_conda_env_is_made_once_per_spec_and_reused(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "envs" / "maze").mkdir(parents=True)
    fake = _fake_conda(bin_dir, tmp_path / "envs")
    attempt_context.enter({"work_root": str(tmp_path / "work"), "node_id": "n1"})
    spec = {"dependencies": ["python=3.11"]}
    conda = {"spec": spec, "hash": conda_hash(spec)}
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    prefix = conda_prefix(tmp_path / "work", conda_hash(spec))
    try:
        first = with_conda(["python", "x.py"], conda, env, "n1")
        second = with_conda(["python", "x.py"], conda, env, "n1")
    finally:
        attempt_context.enter({})
    assert first == second == [str(fake), "run", "--no-capture-output", "-p", str(prefix), "python", "x.py"]
    assert (prefix / READY_MARK).exists()
    assert (prefix.parent / "creates").read_text() == "x"  # made once, then reused
    named = with_conda(["x"], {"name": "maze"}, env, "n1")
    assert named == [str(fake), "run", "--no-capture-output", "-n", "maze", "x"]


def test_conda_absent_is_a_clear_non_retryable_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONDA_EXE", raising=False)
    with pytest.raises(TaskFailure) as caught:
        with_conda(["x"], {"name": "maze"}, {"PATH": str(tmp_path)}, "node-7")
    assert caught.value.error_type == "environment_error"
    assert caught.value.retryable is False
    assert caught.value.message.startswith("conda is not installed on node node-7")
    assert os.environ.get("CONDA_EXE") is None


def _emitted_error_types() -> set[str]:
    """Every error type written as a literal where an attempt is failed: the worker's `_fail`, the
    task process's `_error`, `TaskFailure`, `ReplyRefused`, and the sandbox's verdicts."""
    root = Path(__file__).resolve().parent.parent / "maze"
    found: set[str] = set()
    for folder in ("workers", "tasks"):
        for file in (root / folder).glob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                    at = {"_fail": 1, "_error": 0, "TaskFailure": 0, "ReplyRefused": 0}.get(str(name))
                    args = node.args
                    if at is not None and len(args) > at and isinstance(args[at], ast.Constant):
                        found.add(str(args[at].value))
                elif isinstance(node, ast.FunctionDef) and node.name == "verdict":
                    for ret in ast.walk(node):
                        if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                            first = ret.value.elts[0]
                            if isinstance(first, ast.Constant):
                                found.add(str(first.value))
    return found


def test_retry_on_may_name_every_error_type_an_attempt_fails_with(tmp_path: Path) -> None:
    emitted = _emitted_error_types()
    wanted = {"sandbox_error", "worker_error", "out_of_memory", "process_limit", "protocol_error"}
    assert wanted <= emitted  # the scan sees them where they are made
    assert sorted(emitted - KNOWN_ERROR_TYPES) == []
    _check_task(TaskSubmission(task_id="t", func_hash="0" * 64, retry_on=["sandbox_error", *sorted(emitted)]))
    with pytest.raises(ValidationError, match="unknown retry_on error type"):
        _check_task(TaskSubmission(task_id="t", func_hash="0" * 64, retry_on=["sandbox_eror"]))
    spec = parse_app(b"name: a\ncommand: x\nretries: {max: 1, on: [sandbox_error, worker_error]}\n", tmp_path)
    assert spec.spec.retries.on == ["sandbox_error", "worker_error"]


def _conda_error(conda: dict[str, object], env: dict[str, str]) -> TaskFailure:
    with pytest.raises(TaskFailure) as caught:
        with_conda(["python", "x.py"], conda, env, "n1")
    assert caught.value.error_type == "environment_error"
    return caught.value


def test_a_conda_hash_that_is_not_a_sha256_never_leaves_the_conda_directory(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_conda(bin_dir, tmp_path / "envs")
    work = tmp_path / "node" / "work"
    keep = tmp_path / "node" / "keep"  # what `../..` from `.conda` would reach
    keep.mkdir(parents=True)
    (keep / "data").write_text("mine")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    spec = {"dependencies": ["python=3.11"]}
    attempt_context.enter({"work_root": str(work), "node_id": "n1"})
    try:
        for bad in ("../../keep", "../" * 8, "AB" * 32, "ab" * 31, "", "ab" * 32 + "/.."):
            error = _conda_error({"spec": spec, "hash": bad}, env)
            assert error.retryable is False
            assert error.message.startswith("the app's conda environment hash "), error.message
        # a sha256, but not its spec's: not made at another spec's place
        error = _conda_error({"spec": spec, "hash": "ab" * 32}, env)
        assert error.message == "the app's conda environment hash is not its spec's sha256"
        assert _conda_error({"spec": ["x"], "hash": conda_hash(spec)}, env).retryable is False
    finally:
        attempt_context.enter({})
    assert (keep / "data").read_text() == "mine"
    assert not (work / ".conda").exists() or list((work / ".conda").iterdir()) == []
    with pytest.raises(TaskFailure, match="is not a sha256"):
        conda_prefix(work, "../x")


def test_a_missing_named_conda_env_is_an_environment_error(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "envs" / "maze").mkdir(parents=True)
    _fake_conda(bin_dir, tmp_path / "envs")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    error = _conda_error({"name": "missing"}, env)
    assert error.retryable is False
    assert error.message.startswith(
        f"conda environment 'missing' does not exist on node n1 (looked for in {tmp_path / 'envs'}, "
    ), error.message
    assert with_conda(["x"], {"name": "base"}, env, "n1")[-3:] == ["-n", "base", "x"]  # conda's own
    assert _conda_error({"name": "--help"}, env).message == "'--help' is not a conda environment name"
    _fake_conda(bin_dir)  # a conda that cannot say where its environments are: worth a retry
    error = _conda_error({"name": "maze"}, env)
    assert error.retryable is True
    assert error.message == "`conda info --json` exited with code 1: CondaError: broken"


@pytest.mark.timeout(30)
def test_a_spec_file_is_read_no_further_than_its_size_limit(tmp_path: Path) -> None:
    # a FIFO that never ends: reading it whole would wait for ever
    fifo = tmp_path / "maze.yaml"
    os.mkfifo(fifo)
    release = threading.Event()

    def write() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as out:
            out.write(b"#" * (MAX_SPEC_BYTES + 100))
            release.wait(60)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        with pytest.raises(AppSpecError) as caught:
            load_app(fifo)
    finally:
        release.set()
        writer.join(10)
    assert caught.value.errors == [f"(document): larger than {MAX_SPEC_BYTES} bytes"]
