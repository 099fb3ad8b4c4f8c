"""Runs inside a task process: receives attempts over a pipe, runs the user's function, answers.

Kept import-light: it is preloaded into the forkserver so a new task process starts in ~2 ms.
"""

from __future__ import annotations

import os
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import msgspec

from maze.core.procs import die_with_parent

_encoder = msgspec.msgpack.Encoder()


def _error(
    error_type: str, message: str, exc: BaseException | None = None, retryable: bool = False
) -> dict[str, Any]:
    return {
        "error_type": error_type,
        "message": message,
        "retryable": retryable,
        "traceback": traceback.format_exc() if exc is not None else None,
        "exception_type": type(exc).__name__ if exc is not None else None,
    }


def run_attempt(request: dict[str, Any], functions: dict[str, Any]) -> tuple[bool, Any]:
    """(True, result msgpack bytes) or (False, error dict)."""
    name = request["func_name"]
    fn = functions.get(request["func_hash"])
    if fn is None:
        try:
            fn = cloudpickle.loads(request["func"])
        except ModuleNotFoundError as exc:
            return False, _error(
                "serialization_error",
                f"task function {name!r} needs module {exc.name!r}, which this worker cannot import; "
                f"install it on the worker or call cloudpickle.register_pickle_by_value(<module>) "
                f"before submitting",
                exc,
            )
        except Exception as exc:
            return False, _error("serialization_error", f"cannot load task function {name!r}: {exc}", exc)
        functions[request["func_hash"]] = fn
    inputs = msgspec.msgpack.decode(request["inputs"])
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in request["gpus"])
    cores = request.get("cores") or []
    if cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cores)
        except OSError:
            pass  # a container may forbid it; the reservation still holds
    try:
        result = fn(**inputs) if request["call_style"] == "kwargs" else fn(inputs)
    except BaseException as exc:
        return False, _error("user_code", f"{type(exc).__name__}: {exc}", exc, retryable=True)
    if not isinstance(result, dict):
        return False, _error(
            "invalid_result",
            f"task {name!r} returned {type(result).__name__}, expected a dict of outputs",
        )
    declared = request["outputs"]
    if declared:
        missing = [key for key in declared if key not in result]
        if missing:
            return False, _error(
                "invalid_result", f"task {name!r} did not return declared output(s) {missing}"
            )
    try:
        return True, _encoder.encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        return False, _error(
            "serialization_error", f"result of task {name!r} cannot be serialized: {exc}", exc
        )


def child_main(conn: Connection) -> None:
    die_with_parent()
    functions: dict[str, Any] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        request = msgspec.msgpack.decode(data)
        started = time.perf_counter()
        ok, payload = run_attempt(request, functions)
        duration_ms = (time.perf_counter() - started) * 1000
        conn.send_bytes(_encoder.encode({"ok": ok, "payload": payload, "duration_ms": duration_ms}))
