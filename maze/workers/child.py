"""Runs inside a task process: receives attempts over a pipe, runs the user's function, answers.

Inputs arrive as wire values (maze.events.values) with the blobs they refer to already fetched and
verified by the worker; outputs go back as (key, codec, type, content) for the worker to store
inline or as blobs. Task code is sent once per process and kept by hash.

Kept import-light: it is preloaded into the forkserver so a new task process starts in ~2 ms.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import msgspec

from maze.core import attempt_context
from maze.core.errors import SerializationError, TaskFailure
from maze.core.procs import die_with_parent, end_leftovers, reap_orphans
from maze.events.gather import assemble, shown_name
from maze.events.values import ValueDecoder, decode_map_raw, encode_content, type_name
from maze.workers.request_wire import FdsLost, recv_request

_encoder = msgspec.msgpack.Encoder()
MAX_MESSAGE_CHARS = 16_000
MAX_TRACEBACK_CHARS = 64_000


def clip(text: str, limit: int) -> str:
    """Keep error texts bounded: an exception carrying megabytes must not make its event too big."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


def _error(
    error_type: str, message: str, exc: BaseException | None = None, retryable: bool = False
) -> dict[str, Any]:
    return {
        "error_type": error_type,
        "message": clip(message, MAX_MESSAGE_CHARS),
        "retryable": retryable,
        "traceback": clip(traceback.format_exc(), MAX_TRACEBACK_CHARS) if exc is not None else None,
        "exception_type": type(exc).__name__ if exc is not None else None,
    }


def _missing_module(what: str, exc: ModuleNotFoundError) -> dict[str, Any]:
    return _error(
        "serialization_error",
        f"{what} needs module {exc.name!r}, which this worker cannot import; install it on the "
        f"worker or call cloudpickle.register_pickle_by_value(<module>) before submitting",
        exc,
    )


def _load_function(request: dict[str, Any], functions: dict[str, Any]) -> Any:
    """The task's function, or an error dict."""
    name = request["func_name"]
    fn = functions.get(request["func_hash"])
    if fn is not None:
        return fn
    code = request.get("func")
    if code is None:
        return _error("serialization_error", f"the code of task function {name!r} was not sent")
    try:
        fn = cloudpickle.loads(code)
    except ModuleNotFoundError as exc:
        return _missing_module(f"task function {name!r}", exc)
    except Exception as exc:
        return _error("serialization_error", f"cannot load task function {name!r}: {exc}", exc)
    functions[request["func_hash"]] = fn
    return fn


def _decode_inputs(request: dict[str, Any]) -> dict[str, Any] | tuple[dict[str, Any]]:
    """The input values by name, or a 1-tuple holding an error dict."""
    decoder = ValueDecoder(request.get("blobs") or {})
    inputs = {}
    for key, raw in decode_map_raw(request["inputs"]).items():
        try:
            inputs[key] = decoder.decode(raw)
        except ModuleNotFoundError as exc:
            return (_missing_module(f"input {shown_name(key)!r}", exc),)
        except Exception as exc:
            return (
                _error("serialization_error", f"input {shown_name(key)!r} cannot be decoded: {exc}", exc),
            )
    try:
        return assemble(request.get("gathers") or {}, inputs)  # lists and dicts of other tasks' outputs
    except Exception as exc:
        return (_error("invalid_input", f"a gathered input could not be put together: {exc!r}", exc),)


def _encode_outputs(name: str, result: dict[Any, Any], blob_max: int) -> tuple[bool, Any]:
    outputs = []
    total = 0
    for key, value in result.items():
        if type(key) is not str:
            return False, _error("invalid_result", f"task {name!r} returned a non-string output key {key!r}")
        where = f"output {key!r} of task {name!r}"
        try:
            codec, content = encode_content(value, where)
        except SerializationError as exc:
            return False, _error("serialization_error", exc.message, exc.__cause__ or exc)
        if len(content) > blob_max:
            return False, _error(
                "payload_too_large",
                f"{where} is {len(content)} bytes encoded ({type_name(value)}), above the blob "
                f"store's limit of {blob_max} bytes",
            )
        total += len(content)
        if total > blob_max:  # the reply is held whole by the worker (maze/workers/pool.py)
            return False, _error(
                "payload_too_large",
                f"the outputs of task {name!r} take {total} bytes encoded together (up to {where}), "
                f"above the blob store's limit of {blob_max} bytes; write large values to files",
            )
        outputs.append([key, codec, type_name(value), content])
    return True, outputs


def run_attempt(request: dict[str, Any], functions: dict[str, Any]) -> tuple[bool, Any]:
    """(True, [[key, codec, type, content], ...]) or (False, error dict)."""
    name = request["func_name"]
    fn = _load_function(request, functions)
    if isinstance(fn, dict):
        return False, fn
    inputs = _decode_inputs(request)
    if isinstance(inputs, tuple):
        return False, inputs[0]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in request["gpus"])
    cores = request.get("cores") or []
    if cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cores)
        except OSError:
            pass  # a container may forbid it; the reservation still holds
    attempt_context.enter(request.get("context"))
    try:  # in the attempt's own directory (child_main): relative paths are its files
        result = fn(**inputs) if request["call_style"] == "kwargs" else fn(inputs)
    except TaskFailure as exc:  # the task names its error type and whether to retry
        return False, _error(exc.error_type, exc.message, exc, retryable=exc.retryable)
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
    return _encode_outputs(name, result, request["blob_max_bytes"])


def _flush_output() -> None:
    """What Python and C code buffered leaves before fds 1 and 2 change."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
    with contextlib.suppress(Exception):
        _libc().fflush(None)


_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None)
    return _LIBC


def _print_into(fds: list[int] | tuple[int, int], close: bool = True) -> bool:
    """Make fds 1 and 2 of this process (and of every process it starts) `fds`: its output pipes
    (maze/workers/capture.py), or its own. What was buffered goes first."""
    _flush_output()
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    if close:
        for fd in fds:
            os.close(fd)
    # line by line, as on a terminal: a follower sees a line when it is printed (set once: it
    # stays with the stream objects whatever fd 1 and 2 become)
    for stream in (sys.stdout, sys.stderr):
        if not getattr(stream, "line_buffering", True):
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return True


def _own_output() -> tuple[int, int]:
    """Copies of this process's fds 1 and 2 as it started (/dev/null for one that was closed)."""
    kept = []
    for fd in (1, 2):
        try:
            kept.append(os.dup(fd))
        except OSError:
            kept.append(os.open(os.devnull, os.O_WRONLY))
    return kept[0], kept[1]


def _enter_sandbox_attempt(request: dict[str, Any]) -> None:
    """A sandboxed attempt's context (maze/workers/sandbox.py): its `MAZE_*` variables, and its
    limits where no cgroup holds them (soft and hard: the task cannot raise them again)."""
    os.environ.update(request.get("env") or {})
    import resource

    for name, value in (request.get("rlimits") or {}).items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _where_now() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory it was in is gone
        return "/"


def child_main(conn: Connection, once: bool = False) -> None:
    """Answer attempts until the pipe closes; `once`: one attempt, then end (a sandbox's process,
    maze/workers/sandbox_child.py)."""
    die_with_parent()
    # a process group of its own, and the subreaper of what its tasks start: a timeout or a
    # cancel kills the task's descendants with it (maze/workers/pool.py kill_group)
    os.setpgid(0, 0)
    reap_orphans()
    functions: dict[str, Any] = {}
    sock = socket.socket(fileno=os.dup(conn.fileno()))  # for the fds that come with an attempt
    sock.settimeout(None)  # an idle process waits for its next attempt however long it takes
    own_fds = _own_output()  # where this process's own output goes when an attempt is not captured
    pipes: tuple[int, int] | None = None  # its output pipes (maze/workers/capture.py), for its life
    while True:
        try:
            data, fds = recv_request(sock)  # the output pipes come with the first attempt
        except (EOFError, OSError):
            return
        request = msgspec.msgpack.decode(data)
        started = time.perf_counter()
        captured = bool(request.get("capture"))
        if captured and len(fds) == 2:
            if pipes is not None:
                for fd in pipes:
                    os.close(fd)
            for fd in fds:
                os.set_inheritable(fd, False)  # kept here; its tasks' processes get fds 1 and 2
            pipes = (fds[0], fds[1])
        else:
            for fd in fds:
                os.close(fd)
        if captured:
            if pipes is None:  # never run uncaptured: end, and be replaced
                raise FdsLost(f"an attempt came with {len(fds)} of its 2 output pipes")
            _print_into(pipes, close=False)  # again at every attempt: a task may have moved them
        elif pipes is not None:
            _print_into(own_fds, close=False)
        cwd = request.get("cwd")  # the attempt's own directory; this process runs others next
        home = _where_now() if cwd else None
        try:
            if cwd:
                os.makedirs(cwd, exist_ok=True)  # made here when the worker staged nothing in it
                os.chdir(cwd)
            if once:
                _enter_sandbox_attempt(request)
            ok, payload = run_attempt(request, functions)
        finally:
            if home is not None:
                try:
                    os.chdir(home)
                except OSError:
                    os.chdir("/")
        duration_ms = (time.perf_counter() - started) * 1000
        if not once:
            # before the reply: when the worker reads it, nothing the attempt started runs on, and
            # all it printed is in the pipes (what comes later through them is no attempt's)
            left = end_leftovers()
            if left:  # into the attempt's stderr, whatever the task did to fd 2 (closed, moved)
                note = f"maze: killed {left} process(es) the attempt left running\n".encode()
                with contextlib.suppress(OSError):
                    os.write(pipes[1] if captured and pipes is not None else own_fds[1], note)
        _flush_output()  # what it buffered is in the pipes before the reply is
        reply = {
            "ok": ok,
            "payload": payload,
            "duration_ms": duration_ms,
            "has_func": request["func_hash"] in functions,
        }
        conn.send_bytes(_encoder.encode(reply))
        if once:
            return
