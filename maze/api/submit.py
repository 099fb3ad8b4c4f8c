"""POST /runs, the command boundary for static workflows: decode and validate a submission once,
with no I/O, into task specs plus the blobs they need. `maze.api.run_writer` then stores the blobs
and records the run.

Task inputs arrive in one of four forms:
- `{"ref": "<task_id>.output.<key>"}`: another task's output (creates the edge);
- `{"value": v}`: plain data (JSON or msgpack);
- `{"encoded": <bytes>}` (base64 in JSON): a wire value from the SDK (maze.events.values): a pickle
  or a `maze://artifacts/sha256/<hex>` blob reference;
- `{"gather": [form, ...]}` or `{"gather": {key: form, ...}}`: a list or dict whose items are any
  of these forms (a fan-in of other tasks' outputs: each reference is an edge); the task gets the
  list or dict of their values.
Any literal larger than the inline limit is moved to the blob store here, so every event stays
small whatever a client sends.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import ChainMap
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from msgspec import Struct
from msgspec.msgpack import Ext

from maze.core.dag import find_cycle
from maze.core.errors import ResourceUnavailable, SerializationError, ValidationError
from maze.core.globs import MAX_PATTERNS, pattern_problem
from maze.core.resources import normalize_resources
from maze.core.settings import ValueLimits
from maze.core.task_machine import KNOWN_ERROR_TYPES, canonical_error_type
from maze.events import values
from maze.events.blobs import HEX_RE
from maze.events.specs import Input, InputGather, InputRef, InputValue, Resources, RetryPolicy, TaskSpec

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class TaskSubmission(Struct, forbid_unknown_fields=True):
    task_id: str
    func_hash: str
    name: str = ""
    func_name: str = ""
    call_style: str = "kwargs"
    inputs: dict[str, dict[str, Any]] = {}
    outputs: list[str] | None = None
    required_inputs: list[str] = []
    accepted_inputs: list[str] | None = None  # None: the function takes **kwargs
    resources: dict[str, Any] = {}
    timeout_seconds: float | None = None
    max_retries: int = 0
    retry_backoff_seconds: float = 0.0
    retry_on: list[str] = []
    task_type: str = "code"
    after: list[str] = []
    # in a run with files: which of an attempt's files are registered (maze/core/globs.py);
    # None: every file it created or changed
    artifacts: list[str] | None = None


class SubmitRun(Struct, forbid_unknown_fields=True):
    tasks: list[TaskSubmission]
    # Code sent along (sha256 -> cloudpickle bytes); any func_hash not here must already be in
    # the blob store (PUT /artifacts/sha256/<hex>).
    functions: dict[str, bytes] = {}
    workflow_id: str = ""
    run_id: str = ""
    timeout_seconds: float | None = None  # the run ends `timed_out` this long after it is recorded
    # the sha256 of the run's workspace manifest blob (maze/events/artifacts.py), stored already:
    # each attempt then runs with the workspace's files and its upstream tasks' artifacts staged
    workspace: str = ""
    # what kind of run this is in the one run history: "static" (a workflow) or "app" (a
    # maze.yaml application, maze/sdk/app.py)
    kind: Literal["static", "app"] = "static"


class Accepted(Struct):
    """A validated submission: the specs to record and the blobs they need."""

    specs: list[TaskSpec]
    to_store: dict[str, bytes]  # sha -> content to put in the blob store (code sent inline, spills)
    must_exist: set[str]  # shas referenced but not sent: they must already be stored


def decode_submission(body: bytes, content_type: str) -> SubmitRun:
    try:
        if "msgpack" in content_type:
            return msgspec.msgpack.decode(body, type=SubmitRun)
        return msgspec.json.decode(body, type=SubmitRun)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"invalid run submission: {exc}") from exc


def _parse_ref(ref: Any, where: str) -> InputRef:
    if not isinstance(ref, str) or ".output." not in ref:
        raise ValidationError(f"{where}: reference {ref!r} is not '<task_id>.output.<key>'")
    task_id, _, key = ref.partition(".output.")
    if not task_id or not key:
        raise ValidationError(f"{where}: reference {ref!r} is not '<task_id>.output.<key>'")
    return InputRef(task_id=task_id, key=key)


def _check_task(sub: TaskSubmission) -> None:
    where = f"task {sub.task_id!r}"
    if not ID_RE.fullmatch(sub.task_id):
        raise ValidationError(f"{where}: task ids are 1-128 letters, digits, '_' or '-'")
    if not HEX_RE.fullmatch(sub.func_hash):
        raise ValidationError(f"{where}: func_hash must be the sha256 hex digest of the function's code")
    if sub.call_style not in ("kwargs", "params"):
        raise ValidationError(f"{where}: call_style must be 'kwargs' or 'params'")
    if sub.timeout_seconds is not None and not (
        math.isfinite(sub.timeout_seconds) and sub.timeout_seconds > 0
    ):
        raise ValidationError(f"{where}: timeout_seconds must be a positive number")
    if sub.max_retries < 0:
        raise ValidationError(f"{where}: max_retries must not be negative")
    if sub.retry_backoff_seconds < 0 or not math.isfinite(sub.retry_backoff_seconds):
        raise ValidationError(f"{where}: retry_backoff_seconds must not be negative")
    unknown = sorted(set(sub.retry_on) - KNOWN_ERROR_TYPES)
    if unknown:
        raise ValidationError(
            f"{where}: unknown retry_on error type(s) {unknown}", known=sorted(KNOWN_ERROR_TYPES)
        )
    if sub.artifacts is not None:
        if len(sub.artifacts) > MAX_PATTERNS:
            raise ValidationError(f"{where}: artifacts holds {MAX_PATTERNS} patterns at most")
        for i, pattern in enumerate(sub.artifacts):
            problem = pattern_problem(pattern)
            if problem is not None:
                raise ValidationError(f"{where}: artifacts[{i}] {problem}", task_id=sub.task_id)
    missing = sorted(set(sub.required_inputs) - set(sub.inputs))
    if missing:
        raise ValidationError(
            f"{where} ({sub.func_name}): missing required input(s) {missing}",
            task_id=sub.task_id,
            missing=missing,
        )
    if sub.accepted_inputs is not None:
        extra = sorted(set(sub.inputs) - set(sub.accepted_inputs))
        if extra:
            raise ValidationError(
                f"{where} ({sub.func_name}): unexpected input(s) {extra}; it accepts {sub.accepted_inputs}",
                task_id=sub.task_id,
            )


class _Literals:
    """Turns literal inputs into wire values, moving large ones to the blob store."""

    def __init__(self, limits: ValueLimits) -> None:
        self.limits = limits
        self.to_store: dict[str, bytes] = {}
        self.must_exist: set[str] = set()

    def plain(self, value: Any, where: str) -> bytes:
        try:
            wire = values.encode_plain(value)
        except (TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise SerializationError(f"{where}: value cannot be serialized: {exc}") from exc
        return self._fit(wire, where)

    def encoded(self, given: Any, where: str) -> bytes:
        if isinstance(given, str):  # JSON clients send bytes as base64
            try:
                given = base64.b64decode(given, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValidationError(f"{where}: 'encoded' must be base64 in JSON: {exc}") from exc
        if not isinstance(given, bytes):
            raise ValidationError(f"{where}: 'encoded' must be bytes (msgpack bin) or base64 text")
        opaque = values.check_wire(given, where)
        if isinstance(opaque, Ext) and opaque.code == values.EXT_BLOB:
            ref = values.blob_ref(opaque)
            assert ref is not None
            if ref.size > self.limits.blob_max_bytes:
                raise values.too_large(where, ref.size, self.limits.blob_max_bytes)
            self.must_exist.add(ref.sha256)
            return given
        if isinstance(opaque, Ext) and opaque.code == values.EXT_FILE:
            staged = values.staged_file(opaque)
            assert staged is not None
            if staged.size > self.limits.blob_max_bytes:
                raise values.too_large(where, staged.size, self.limits.blob_max_bytes)
            self.must_exist.add(staged.sha256)  # staged by the worker: stored before the run is
            return given
        return self._fit(given, where)

    def _fit(self, wire: bytes, where: str) -> bytes:
        if len(wire) <= self.limits.inline_bytes:
            return wire
        codec, content, kind = values.content_of(wire)
        if len(content) > self.limits.blob_max_bytes:
            raise values.too_large(where, len(content), self.limits.blob_max_bytes)
        ref = values.blob_ref_for(codec, content, kind)
        self.to_store[ref.sha256] = content
        return values.wire_blob(ref)


MAX_GATHER_DEPTH = 32  # lists or dicts of references nested this deep at most


def _input(
    given: Any,
    where: str,
    sub: TaskSubmission,
    by_id: Mapping[str, TaskSubmission | TaskSpec],
    literals: _Literals,
    depth: int,
) -> Input:
    """One input form (or an item of a gathered one) as the input it records."""
    keys = set(given) if isinstance(given, dict) else None
    if keys == {"ref"}:
        ref = _parse_ref(given["ref"], where)
        upstream = by_id.get(ref.task_id)
        if upstream is None:
            raise ValidationError(f"{where}: refers to unknown task {ref.task_id!r}")
        if ref.task_id == sub.task_id:
            raise ValidationError(f"{where}: a task cannot consume its own output")
        if upstream.outputs is not None and ref.key not in upstream.outputs:
            raise ValidationError(
                f"{where}: task {ref.task_id!r} ({upstream.func_name}) has no output "
                f"{ref.key!r}; its outputs are {upstream.outputs}"
            )
        return ref
    if keys == {"value"}:
        return InputValue(data=literals.plain(given["value"], where))
    if keys == {"encoded"}:
        return InputValue(data=literals.encoded(given["encoded"], where))
    if keys == {"gather"}:
        if depth >= MAX_GATHER_DEPTH:
            raise ValidationError(
                f"{where}: lists or dicts of references nest {MAX_GATHER_DEPTH} deep at most"
            )
        items = given["gather"]
        if isinstance(items, list):
            return InputGather(
                items=tuple(
                    _input(item, f"{where}[{i}]", sub, by_id, literals, depth + 1)
                    for i, item in enumerate(items)
                )
            )
        if isinstance(items, dict):
            for key in items:
                if type(key) not in (str, int):
                    raise ValidationError(
                        f"{where}: a gathered dict's keys are strings or integers, not {key!r}"
                    )
            return InputGather(
                items=tuple(
                    _input(item, f"{where}[{key!r}]", sub, by_id, literals, depth + 1)
                    for key, item in items.items()
                ),
                keys=tuple(items),
            )
        raise ValidationError(f"{where}: 'gather' takes a list or a dict of input forms")
    raise ValidationError(
        f"{where}: expected {{'ref': ...}}, {{'value': ...}}, {{'encoded': ...}} or {{'gather': ...}}"
    )


def _resources(given: dict[str, Any], shapes: dict[Any, Resources]) -> Resources:
    try:
        key = tuple(sorted((k, type(v), v) for k, v in given.items()))
        hash(key)
    except TypeError:
        return normalize_resources(given)
    found = shapes.get(key)
    if found is None:
        found = shapes[key] = normalize_resources(given)
    return found


def accept_submission(
    req: SubmitRun, limits: ValueLimits, existing: Mapping[str, TaskSpec] | None = None
) -> Accepted:
    """Validate everything and build the run's task specs. No I/O: the returned blobs still have to
    be stored (or found) before the run may be recorded. `existing`: the tasks a dynamic run holds
    already, which the new ones may refer to (each new task only to those and to the new tasks
    before it)."""
    if not req.tasks:
        raise ValidationError("the workflow has no tasks")
    for digest, blob in req.functions.items():
        if values.sha256_hex(blob) != digest:
            raise SerializationError(f"function blob {digest[:12]}… does not match its sha256")
        if len(blob) > limits.blob_max_bytes:
            raise values.too_large(f"function {digest[:12]}…", len(blob), limits.blob_max_bytes)
    # the new tasks over the run's (no copy of those: an append costs what it brings)
    by_id: ChainMap[str, TaskSubmission | TaskSpec] = ChainMap({}, existing or {})  # type: ignore[arg-type]
    for sub in req.tasks:
        if sub.task_id in by_id:
            raise ValidationError(f"duplicate task id {sub.task_id!r}")
        by_id[sub.task_id] = sub
    literals = _Literals(limits)
    shapes: dict[Any, Resources] = {}  # most tasks of a wide run ask for the same resources
    specs: list[TaskSpec] = []
    for sub in req.tasks:
        _check_task(sub)
        inputs: dict[str, Input] = {}
        for name, given in sub.inputs.items():
            inputs[name] = _input(given, f"task {sub.task_id!r} input {name!r}", sub, by_id, literals, 0)
        for up in sub.after:
            if up not in by_id:
                raise ValidationError(f"task {sub.task_id!r}: edge from unknown task {up!r}")
        try:
            resources = _resources(sub.resources, shapes)
        except ValidationError as exc:
            raise ValidationError(f"task {sub.task_id!r}: {exc.message}", **exc.details) from exc
        specs.append(
            TaskSpec(
                task_id=sub.task_id,
                name=sub.name or sub.func_name or sub.task_id,
                func_name=sub.func_name or sub.name,
                func_hash=sub.func_hash,
                call_style=sub.call_style,
                inputs=inputs,
                outputs=tuple(sub.outputs) if sub.outputs is not None else None,
                resources=resources,
                timeout_seconds=sub.timeout_seconds,
                retry=RetryPolicy(
                    max_retries=sub.max_retries,
                    backoff_seconds=sub.retry_backoff_seconds,
                    # recorded by the names this vocabulary uses (`timeout` is `timed_out`)
                    retry_on=tuple(dict.fromkeys(canonical_error_type(n) for n in sub.retry_on)),
                ),
                task_type=sub.task_type,
                after=tuple(sorted(set(sub.after))),
                artifacts=tuple(sub.artifacts) if sub.artifacts is not None else None,
            )
        )
    if existing is not None:
        known = set(existing)
        for spec in specs:
            later = sorted(spec.upstream() - known)
            if later:
                raise ValidationError(
                    f"task {spec.task_id!r} refers to task(s) {later}, not appended before it",
                    task_id=spec.task_id,
                    unknown=later,
                )
            known.add(spec.task_id)
    cycle = find_cycle({s.task_id: s.upstream() for s in specs})
    if cycle:
        raise ValidationError(f"the workflow has a cycle: {' -> '.join(cycle)}", cycle=cycle)
    used = {s.func_hash for s in specs}
    to_store = {h: b for h, b in req.functions.items() if h in used}
    to_store.update(literals.to_store)
    if req.workspace:
        if not HEX_RE.fullmatch(req.workspace):
            raise ValidationError("workspace must be the sha256 hex digest of a stored workspace manifest")
        literals.must_exist.add(req.workspace)
    must_exist = (used | literals.must_exist) - set(to_store)
    return Accepted(specs=specs, to_store=to_store, must_exist=must_exist)


def check_placeable(specs: list[TaskSpec], never_fits: Any) -> None:
    """Reject a run with any task no registered node could ever hold (nothing is appended)."""
    seen: set[Any] = set()
    for spec in specs:
        if spec.resources in seen:
            continue
        seen.add(spec.resources)
        why = never_fits(spec.resources)
        if why is not None:
            raise ResourceUnavailable(
                f"task {spec.task_id!r} ({spec.func_name}): {why}", task_id=spec.task_id
            )
