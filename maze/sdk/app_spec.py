"""maze.yaml: an application run's spec (README, "maze.yaml applications"), and its validation.

`validate(data, base_dir)` checks a decoded YAML document field by field and gives back every
error it finds, each with its field path (`resources.cpu: must be greater than 0`,
`retries.on[1]: unknown error type 'foo'`), not only the first; `load_app(path)` reads a file and
returns the typed spec with what it resolves to (the command's argv, the workspace directory, the
conda environment), or raises AppSpecError carrying all of the errors. Pure but for reading the
file and looking at the directories and conda files it names.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import msgspec
import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the test environment)
from msgspec import Struct

from maze.core.errors import ValidationError
from maze.core.globs import MAX_PATTERNS, pattern_problem
from maze.core.resources import normalize_resources
from maze.core.task_machine import KNOWN_ERROR_TYPES

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
CONDA_NAME_RE = re.compile(r"^[A-Za-z0-9_.+][A-Za-z0-9_.+-]{0,127}$")  # not an option: no leading '-'
CONDA_SPEC_KEYS = ("name", "channels", "dependencies", "variables")
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_RETRIES = 100
MAX_SPEC_BYTES = 1024 * 1024
MAX_WHOLE = 2**53  # the largest whole number a field takes (megabytes, retries): exact as a float too
# the fields of a whole number: YAML's `2.0` there is taken as 2
WHOLE_FIELDS = (("resources", "cpu_mem"), ("resources", "gpu_mem"), ("retries", "max"))


class AppResources(Struct, forbid_unknown_fields=True, frozen=True):
    cpu: float = 1.0
    cpu_mem: int = 0
    gpu: float = 0.0
    gpu_mem: int = 0


class AppEnv(Struct, forbid_unknown_fields=True, frozen=True):
    # the name of an existing environment, a conda environment file (.yml/.yaml, relative to the
    # maze.yaml), or an environment spec ({channels, dependencies}) made once per node
    conda: str | dict[str, Any] | None = None
    vars: dict[str, str | int | float] = {}


class AppRetries(Struct, forbid_unknown_fields=True, frozen=True):
    max: int = 0
    backoff_seconds: float = 0.0
    on: list[str] = []


class AppSpec(Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    command: str | list[str]
    description: str = ""
    workspace: str = "."
    resources: AppResources = AppResources()
    env: AppEnv = AppEnv()
    artifacts: list[str] = []
    timeout_seconds: float | None = None
    retries: AppRetries = AppRetries()
    shell: bool = False
    sandbox: bool = False
    network: bool = False


class App(Struct, frozen=True):
    """A valid spec and what it resolves to."""

    spec: AppSpec
    argv: list[str]  # the command as run: its argv, or ["/bin/sh", "-c", command] with shell
    workspace_dir: Path
    # None, {"name": <existing env>}, or {"spec": <environment spec>, "hash": <its sha256>}
    conda: dict[str, Any] | None


class AppSpecError(ValidationError):
    """A maze.yaml that is not valid: `errors` holds each problem as `field.path: message`."""

    def __init__(self, source: str, errors: list[str]) -> None:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        super().__init__(f"{source} is not a valid app spec: {shown}", errors=errors)
        self.errors = errors


def _fields(struct: type[Struct]) -> tuple[str, ...]:
    return struct.__struct_fields__


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def mapping(self, where: str, value: Any, struct: type[Struct]) -> dict[str, Any] | None:
        """`value` as a mapping with only `struct`'s fields (each unknown one is an error)."""
        if not isinstance(value, dict):
            self.error(where, f"must be a mapping, got {_type_name(value)}")
            return None
        known = _fields(struct)
        for key in value:
            if key not in known:
                self.error(
                    f"{where}.{key}" if where else str(key), f"unknown field (known: {', '.join(known)})"
                )
        return value

    def number(self, where: str, value: Any, low: float, strict: bool, whole: bool = False) -> None:
        if not _is_number(value) or (whole and isinstance(value, float) and not value.is_integer()):
            kind = "a whole number" if whole else "a number"
            self.error(where, f"must be {kind}, got {_type_name(value)} {value!r}")
        elif value < low or (strict and value == low):
            self.error(where, f"must be {'>' if strict else '>='} {low:g}, got {value!r}")
        elif whole and value > MAX_WHOLE:
            self.error(where, f"must be at most {MAX_WHOLE}, got {value!r}")

    def boolean(self, where: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.error(where, f"must be true or false, got {_type_name(value)} {value!r}")

    def strings(self, where: str, value: Any) -> list[str]:
        if not isinstance(value, list):
            self.error(where, f"must be a list, got {_type_name(value)}")
            return []
        good = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                good.append(item)
            else:
                self.error(f"{where}[{i}]", f"must be a string, got {_type_name(item)} {item!r}")
        return good


def _check_command(c: _Checker, doc: dict[str, Any]) -> None:
    if "command" not in doc:
        c.error("command", "is required (a string, or a list of arguments)")
        return
    command, shell = doc["command"], doc.get("shell", False)
    if isinstance(command, str):
        if not command.strip():
            c.error("command", "must not be empty")
        elif shell is not True:
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                c.error("command", f"cannot be split into arguments: {exc}")
            else:
                if not argv or not argv[0]:
                    c.error("command", f"the program must not be empty (the command splits into {argv!r})")
    elif isinstance(command, list):
        items = c.strings("command", command)
        if not command:
            c.error("command", "must not be an empty list")
        elif items and not items[0]:
            c.error("command[0]", "the program must not be empty")
        if shell is True:
            c.error("command", "with shell: true the command is one string, run by /bin/sh -c")
    else:
        c.error("command", f"must be a string or a list of strings, got {_type_name(command)}")


def _check_resources(c: _Checker, value: Any, flags: dict[str, bool]) -> None:
    """`flags`: the app's sandbox and network, when they are valid (a sandbox has no GPU)."""
    given = c.mapping("resources", value, AppResources)
    if given is None:
        return
    before = len(c.errors)
    for key, low, strict, whole in (
        ("cpu", 0, True, False),
        ("cpu_mem", 0, False, True),
        ("gpu", 0, False, False),
        ("gpu_mem", 0, False, True),
    ):
        if key in given:
            c.number(f"resources.{key}", given[key], low, strict, whole)
    if len(c.errors) == before:
        try:  # what a task's resources must also be (a fractional gpu above 1, say)
            known = {k: v for k, v in given.items() if k in _fields(AppResources)}
            normalize_resources(known | flags)
        except ValidationError as exc:
            c.error("resources", exc.message)


def conda_hash(spec: dict[str, Any]) -> str:
    """The sha256 of an environment spec, as canonical JSON without its `name`: the key of the
    environment a node makes for it (`<work root>/.conda/maze-<hash[:16]>`)."""
    keyed = {k: v for k, v in spec.items() if k != "name"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def inside(base_dir: Path, name: str) -> Path | None:
    """`base_dir / name` with its links resolved, or None when that is not `base_dir` or under it
    (an absolute `name`, `..`, a link that leads out)."""
    if Path(name).is_absolute():
        return None
    try:
        base = base_dir.resolve()
        target = (base / name).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL
        return None
    return target if target == base or base in target.parents else None


def _check_workspace(c: _Checker, workspace: Any) -> None:
    """The workspace is uploaded to the cluster: only the spec's own directory or one under it, so
    a maze.yaml from elsewhere cannot send `~` or `/` away."""
    if not isinstance(workspace, str) or not workspace:
        c.error("workspace", f"must be a directory (a string), got {_type_name(workspace)}")
        return
    if "\x00" in workspace:
        c.error("workspace", "must not hold a NUL character")
        return
    if Path(workspace).is_absolute():
        c.error("workspace", f"{workspace} must be relative to the maze.yaml's directory ({c.base_dir})")
        return
    if inside(c.base_dir, workspace) is None:
        c.error(
            "workspace",
            f"{workspace} leads out of the maze.yaml's directory ({c.base_dir}, links resolved): "
            "a workspace is that directory or one under it",
        )
        return
    if not (c.base_dir / workspace).is_dir():
        shown = workspace if workspace.startswith(".") else f"./{workspace}"
        c.error("workspace", f"directory {shown} does not exist (relative to {c.base_dir})")


def _check_conda_spec(c: _Checker, where: str, spec: Any) -> dict[str, Any] | None:
    if not isinstance(spec, dict):
        c.error(where, f"an environment spec must be a mapping, got {_type_name(spec)}")
        return None
    for key in spec:
        if key not in CONDA_SPEC_KEYS:
            c.error(f"{where}.{key}", f"unknown field (known: {', '.join(CONDA_SPEC_KEYS)})")
    if "dependencies" not in spec:
        c.error(f"{where}.dependencies", "is required (the packages of the environment)")
    else:
        deps = spec["dependencies"]
        if not isinstance(deps, list) or not deps:
            c.error(f"{where}.dependencies", "must be a non-empty list")
    if "channels" in spec:
        c.strings(f"{where}.channels", spec["channels"])
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as exc:
        c.error(where, f"must be plain YAML data: {exc}")
        return None
    return spec


def _check_conda(c: _Checker, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        spec = _check_conda_spec(c, "env.conda", value)
        return None if spec is None else {"spec": spec, "hash": conda_hash(spec)}
    if not isinstance(value, str):
        c.error(
            "env.conda", f"must be an environment name, a .yml file or a mapping, got {_type_name(value)}"
        )
        return None
    if value.endswith((".yml", ".yaml")):
        path = c.base_dir / value
        if "\x00" in value or inside(c.base_dir, value) is None:
            c.error("env.conda", f"environment file {value} must be in the maze.yaml's directory or under it")
            return None
        if not path.is_file():
            c.error("env.conda", f"environment file {value} does not exist")
            return None
        try:
            loaded = decode_yaml(path.read_bytes())
        except (yaml.YAMLError, OSError) as exc:
            c.error("env.conda", f"environment file {value} cannot be read: {exc}")
            return None
        spec = _check_conda_spec(c, f"env.conda ({value})", loaded)
        return None if spec is None else {"spec": spec, "hash": conda_hash(spec)}
    if not CONDA_NAME_RE.fullmatch(value):
        c.error(
            "env.conda", f"{value!r} is not an environment name (letters, digits, '_.+-', no leading '-')"
        )
        return None
    return {"name": value}


def _check_env(c: _Checker, value: Any) -> dict[str, Any] | None:
    env = c.mapping("env", value, AppEnv)
    if env is None:
        return None
    variables = env.get("vars", {})
    if not isinstance(variables, dict):
        c.error("env.vars", f"must be a mapping of NAME: value, got {_type_name(variables)}")
    else:
        for key, val in variables.items():
            where = f"env.vars.{key}"
            if not isinstance(key, str) or not VAR_RE.fullmatch(key):
                c.error(where, "is not a variable name (letters, digits and '_', not starting with a digit)")
            elif key.startswith("MAZE_"):
                c.error(where, "names starting with MAZE_ are Maze's own (MAZE_RUN_ID, ...)")
            if isinstance(val, bool) or not isinstance(val, str | int | float):
                quote = " (quote it: YAML reads true/false as booleans)" if isinstance(val, bool) else ""
                c.error(where, f"must be a string or a number, got {_type_name(val)} {val!r}{quote}")
            elif isinstance(val, str) and "\x00" in val:
                c.error(where, "must not hold a NUL character")
    return _check_conda(c, env.get("conda"))


def _check_retries(c: _Checker, value: Any) -> None:
    retries = c.mapping("retries", value, AppRetries)
    if retries is None:
        return
    if "max" in retries:
        c.number("retries.max", retries["max"], 0, False, whole=True)
        if _is_number(retries["max"]) and retries["max"] > MAX_RETRIES:
            c.error("retries.max", f"must be at most {MAX_RETRIES}, got {retries['max']!r}")
    if "backoff_seconds" in retries:
        c.number("retries.backoff_seconds", retries["backoff_seconds"], 0, False)
    if "on" in retries:
        if not isinstance(retries["on"], list):
            c.error("retries.on", f"must be a list of error types, got {_type_name(retries['on'])}")
            return
        for i, name in enumerate(retries["on"]):
            if not isinstance(name, str):
                c.error(f"retries.on[{i}]", f"must be an error type (a string), got {_type_name(name)}")
            elif name not in KNOWN_ERROR_TYPES:
                c.error(
                    f"retries.on[{i}]",
                    f"unknown error type {name!r} (known: {', '.join(sorted(KNOWN_ERROR_TYPES))})",
                )


def validate(doc: Any, base_dir: Path) -> tuple[list[str], dict[str, Any] | None]:
    """(every error as `field.path: message`, the resolved conda environment) of a decoded
    maze.yaml whose directory is `base_dir`."""
    c = _Checker(base_dir)
    top = c.mapping("", doc, AppSpec)
    if top is None:
        return ["(document): must be a mapping of fields (name, command, ...)"], None
    if "name" not in top:
        c.error("name", "is required")
    elif not isinstance(top["name"], str) or not NAME_RE.fullmatch(top["name"]):
        c.error("name", "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    _check_command(c, top)
    if "description" in top and not isinstance(top["description"], str):
        c.error("description", f"must be a string, got {_type_name(top['description'])}")
    _check_workspace(c, top.get("workspace", "."))
    if "resources" in top:
        sandbox = top.get("sandbox") is True
        # what `maze run` will ask of the cluster, so that a spec valid here is not refused there
        # (network without sandbox has its own error below)
        flags = {"sandbox": sandbox, "network": sandbox and top.get("network") is True}
        _check_resources(c, top["resources"], flags)
    conda = _check_env(c, top["env"]) if "env" in top else None
    if "artifacts" in top:
        patterns = c.strings("artifacts", top["artifacts"])
        if len(patterns) > MAX_PATTERNS:
            c.error("artifacts", f"holds {MAX_PATTERNS} patterns at most")
        for i, pattern in enumerate(top["artifacts"] if isinstance(top["artifacts"], list) else []):
            problem = pattern_problem(pattern) if isinstance(pattern, str) else None
            if problem is not None:
                c.error(f"artifacts[{i}]", problem)
    if "timeout_seconds" in top and top["timeout_seconds"] is not None:
        c.number("timeout_seconds", top["timeout_seconds"], 0, True)
        if _is_number(top["timeout_seconds"]) and top["timeout_seconds"] > MAX_TIMEOUT_S:
            c.error("timeout_seconds", f"must be at most {MAX_TIMEOUT_S} (7 days)")
    if "retries" in top:
        _check_retries(c, top["retries"])
    for flag in ("shell", "sandbox", "network"):
        if flag in top:
            c.boolean(flag, top[flag])
    if top.get("network") is True and top.get("sandbox") is not True:
        c.error("network", "applies to sandboxed apps only (an app outside a sandbox has the network)")
    if (
        top.get("sandbox") is True
        and "env" in top
        and isinstance(top["env"], dict)
        and top["env"].get("conda")
    ):
        c.error(
            "env.conda", "cannot be used with sandbox: true (a sandbox cannot make or reach the environment)"
        )
    return c.errors, conda


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML as maze.yaml means it: only `true` and `false` are booleans (YAML 1.2), so `on:` (the
    retries' error types) is a key and `DATASET: yes` a string, not YAML 1.1's booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def decode_yaml(text: bytes | str) -> Any:
    """A YAML document as plain data (safe: no tags that build objects). Raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)


def _whole_numbers(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the whole numbers YAML wrote as floats (`max: 2.0`) as ints (validate() let
    through integral floats only)."""
    out = dict(doc)
    for section, key in WHOLE_FIELDS:
        value = out.get(section, {}).get(key)
        if isinstance(value, float):
            out[section] = {**out[section], key: int(value)}
    return out


def _convert_error(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `float` - at `$.retries.max`" as `retries.max: ...`."""
    found = re.fullmatch(r"(.*) - at `\$\.?(.*)`", str(exc), re.DOTALL)
    if found is None:
        return f"(document): {exc}"
    return f"{found.group(2) or '(document)'}: {found.group(1)}"


def parse_app(text: bytes, base_dir: Path, source: str = "maze.yaml") -> App:
    """A maze.yaml's content as a valid App, or AppSpecError with every error."""
    if len(text) > MAX_SPEC_BYTES:
        raise AppSpecError(source, [f"(document): larger than {MAX_SPEC_BYTES} bytes"])
    try:
        doc = decode_yaml(text)
    except yaml.YAMLError as exc:
        raise AppSpecError(source, [f"(document): not valid YAML: {' '.join(str(exc).split())}"]) from exc
    errors, conda = validate(doc, base_dir)
    if errors:
        raise AppSpecError(source, errors)
    try:
        spec = msgspec.convert(_whole_numbers(doc), AppSpec)
    except msgspec.ValidationError as exc:  # a case validate() missed: still `field.path: message`
        raise AppSpecError(source, [_convert_error(exc)]) from exc
    if isinstance(spec.command, list):
        argv = list(spec.command)
    elif spec.shell:
        argv = ["/bin/sh", "-c", spec.command]
    else:
        argv = shlex.split(spec.command)
    return App(spec=spec, argv=argv, workspace_dir=(base_dir / spec.workspace).resolve(), conda=conda)


def load_app(path: str | Path) -> App:
    """Read and validate a maze.yaml (its workspace and conda file are relative to its directory)."""
    file = Path(path).expanduser()
    try:
        with file.open("rb") as handle:  # never more than the cap: a huge file is refused unread
            text = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise AppSpecError(str(path), [f"(file): cannot be read: {exc.strerror or exc}"]) from exc
    return parse_app(text, file.resolve().parent, str(path))
