"""POST /runs: the command boundary for static workflows. Validates everything once and produces
exactly one RunCreated event, or a typed error with nothing appended."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import msgspec
from msgspec import Struct

from maze.core.dag import find_cycle
from maze.core.errors import ResourceUnavailable, SerializationError, ValidationError
from maze.core.resources import normalize_resources
from maze.events.codec import encode_value
from maze.events.runs import RunCreated
from maze.events.specs import Input, InputRef, InputValue, RetryPolicy, TaskSpec

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
KNOWN_ERROR_TYPES = frozenset(
    {
        "user_code",
        "timeout",
        "timed_out",
        "node_lost",
        "resource_unavailable",
        "artifact_error",
        "serialization_error",
        "process_exited",
        "invalid_result",
        "invalid_input",
    }
)


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


class SubmitRun(Struct, forbid_unknown_fields=True):
    tasks: list[TaskSubmission]
    functions: dict[str, bytes]
    workflow_id: str = ""
    run_id: str = ""


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


def _check_task(sub: TaskSubmission, functions: dict[str, bytes]) -> None:
    where = f"task {sub.task_id!r}"
    if not ID_RE.match(sub.task_id):
        raise ValidationError(f"{where}: task ids are 1-128 letters, digits, '_' or '-'")
    if sub.func_hash not in functions:
        raise ValidationError(f"{where}: function {sub.func_hash} is not among the submitted functions")
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


def build_run_created(req: SubmitRun, run_id: str, at_ms: int) -> RunCreated:
    if not req.tasks:
        raise ValidationError("the workflow has no tasks")
    for digest, blob in req.functions.items():
        if hashlib.sha256(blob).hexdigest() != digest:
            raise SerializationError(f"function blob {digest[:12]}… does not match its sha256")
    by_id: dict[str, TaskSubmission] = {}
    for sub in req.tasks:
        if sub.task_id in by_id:
            raise ValidationError(f"duplicate task id {sub.task_id!r}")
        by_id[sub.task_id] = sub
    specs: list[TaskSpec] = []
    for sub in req.tasks:
        _check_task(sub, req.functions)
        inputs: dict[str, Input] = {}
        for name, given in sub.inputs.items():
            where = f"task {sub.task_id!r} input {name!r}"
            if set(given) == {"ref"}:
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
                inputs[name] = ref
            elif set(given) == {"value"}:
                try:
                    inputs[name] = InputValue(data=encode_value(given["value"]))
                except (TypeError, msgspec.EncodeError) as exc:
                    raise SerializationError(f"{where}: value cannot be serialized: {exc}") from exc
            else:
                raise ValidationError(f"{where}: expected {{'ref': ...}} or {{'value': ...}}")
        for up in sub.after:
            if up not in by_id:
                raise ValidationError(f"task {sub.task_id!r}: edge from unknown task {up!r}")
        try:
            resources = normalize_resources(sub.resources)
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
                outputs=sub.outputs,
                resources=resources,
                timeout_seconds=sub.timeout_seconds,
                retry=RetryPolicy(
                    max_retries=sub.max_retries,
                    backoff_seconds=sub.retry_backoff_seconds,
                    retry_on=list(sub.retry_on),
                ),
                task_type=sub.task_type,
                after=sorted(set(sub.after)),
            )
        )
    cycle = find_cycle({s.task_id: s.upstream() for s in specs})
    if cycle:
        raise ValidationError(f"the workflow has a cycle: {' -> '.join(cycle)}", cycle=cycle)
    used = {s.func_hash for s in specs}
    return RunCreated(
        run_id=run_id,
        workflow_id=req.workflow_id or run_id,
        at_ms=at_ms,
        tasks=specs,
        functions={h: b for h, b in req.functions.items() if h in used},
    )


def check_placeable(run: RunCreated, never_fits: Any) -> None:
    """Reject a run with any task no registered node could ever hold (nothing is appended)."""
    for spec in run.tasks:
        why = never_fits(spec.resources)
        if why is not None:
            raise ResourceUnavailable(
                f"task {spec.task_id!r} ({spec.func_name}): {why}", task_id=spec.task_id
            )
