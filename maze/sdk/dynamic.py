"""DynamicRun: a run its client grows while it runs (`MaClient.create_dynamic_run`).

Each `append_task` is one request (`POST /runs/{id}/tasks`) that the head checks against the run's
live state and records as a `task.appended` event; the controller places the task as soon as it
has folded it. Task ids are chosen here, so an append sent again after a lost answer (a head
restarting) is answered `duplicate`: never a second task. `wait_for_task` reads the task's row
(`GET /runs/{id}/tasks/{task_id}`, reading its own writes) until it has succeeded (its outputs
dict) or failed for good (`TaskFailed`, with its structured error)."""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from maze.core.errors import BlobMissing, TaskFailed, Unavailable, Unreachable, ValidationError, WaitTimeout
from maze.core.task_machine import TERMINAL, canonical_error_type
from maze.events.specs import RetryPolicy, TaskError
from maze.events.values import MARKER
from maze.head.retry import next_attempt_delay_ms
from maze.sdk.stream import follow_events
from maze.sdk.workflow import MaTask, MaWorkflow

if TYPE_CHECKING:
    from maze.sdk.client import MaClient

RESEND_FOR_S = 60.0  # how long a request is sent again while the head cannot be reached
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.1
LOOK_AROUND_S = 0.5  # a task pending this long: is its run over, or an upstream task failed?
_ERROR_FIELDS = set(TaskError.__struct_fields__)


def _resending(send: Callable[[], Any]) -> Any:
    """`send()`, again while the head cannot be reached (it is restarting): every request sent this
    way is idempotent."""
    began = time.monotonic()
    pause = 0.1
    while True:
        try:
            return send()
        except Unreachable:
            raise
        except Unavailable:
            if time.monotonic() - began > RESEND_FOR_S:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


class DynamicRun:
    """A dynamic run: append tasks while it runs, wait for them, then `finalize` it (or `cancel`;
    without either it ends `timed_out` at its timeout, or stays open when it has none)."""

    def __init__(self, client: MaClient, created: dict[str, Any]) -> None:
        self.client = client
        self.run_id: str = created["run_id"]
        self.workflow_id: str = created["workflow_id"]
        self.max_tasks: int = created["max_tasks"]
        self.timeout_seconds: float | None = created["timeout_seconds"]
        self._wf = MaWorkflow(self.workflow_id, client.server_url, client=client)
        self._http = client.http

    def __repr__(self) -> str:
        return f"DynamicRun({self.run_id!r}, tasks={len(self._wf.tasks)}, max_tasks={self.max_tasks})"

    @property
    def tasks(self) -> list[MaTask]:
        """The tasks appended through this object, in order."""
        return list(self._wf.tasks.values())

    # ---- growing ------------------------------------------------------------------------------
    def append_task(
        self,
        func: Callable[..., Any],
        inputs: dict[str, Any] | None = None,
        task_name: str | None = None,
        after: Iterable[MaTask | str] | None = None,
    ) -> MaTask:
        """Append a task (a function decorated with @task) and return its handle (`.task_id`,
        `.outputs["key"]`). `inputs` as `add_task` takes them: literals, or outputs of tasks
        appended before (`t.outputs["k"]`, each an edge: the task starts once they are done);
        `after`: tasks (or task ids) to wait for without reading their outputs. Raises
        ValidationError for a reference or `after` the run does not hold, Conflict when the run
        has ended or holds `max_tasks` tasks, ResourceUnavailable when no node could hold it:
        nothing is appended then."""
        task = self._wf.add_task(func, inputs=inputs, task_name=task_name)
        try:
            for up in after or ():
                task.after.add(up.task_id if isinstance(up, MaTask) else str(up))
            self._post(task)
        except BaseException:
            self._wf.tasks.pop(task.task_id, None)
            raise
        return task

    def _post(self, task: MaTask) -> None:
        blobs = self.client.blobs
        functions = {task.func_hash: self._wf.functions[task.func_hash]}
        for attempt in range(2):
            inline, upload = blobs.split_code(functions)
            blobs.upload({**upload, **task._blobs})
            body = {"tasks": [task.submission()], "functions": inline}
            try:
                answer = _resending(functools.partial(self._send_append, msgspec.msgpack.encode(body)))
            except BlobMissing:
                if attempt == 1:
                    raise
                blobs.known.clear()  # the head lost what we thought it had
                continue
            blobs.known.update(inline)
            if answer.get("seq"):
                self._http.note_seen(int(answer["seq"]))
            return

    def _send_append(self, data: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = self._http.post(
            f"/runs/{self.run_id}/tasks", content=data, headers={"content-type": "application/msgpack"}
        )
        return answer

    # ---- waiting ------------------------------------------------------------------------------
    def wait_for_task(self, task: MaTask | str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the task has succeeded and return its outputs dict, or raise TaskFailed (its
        structured error: `error_type`, `message`, `traceback`, ...) once it has failed for good
        (its retries spent), was cancelled, or can never run (an upstream task failed for good, or
        the run ended first). WaitTimeout (a TimeoutError) after `timeout` seconds: the task goes on."""
        handle = self._wf.tasks.get(task.task_id if isinstance(task, MaTask) else task)
        if handle is None:
            raise ValidationError(f"task {task!r} was not appended through this DynamicRun")
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, began, looked = POLL_FIRST_S, time.monotonic(), 0.0
        while True:
            row: dict[str, Any] = self._http.get(f"/runs/{self.run_id}/tasks/{handle.task_id}")
            state = row["state"]
            if state == "succeeded":
                return self._result(row)
            if state in TERMINAL and (state == "cancelled" or self._failed_for_good(handle, row)):
                raise self._failure(handle, row["error"] or {}, f"task {handle.task_name} ended {state}")
            now = time.monotonic()
            if state == "pending" and now - began > LOOK_AROUND_S and now - looked > LOOK_AROUND_S:
                looked = now
                self._look_around(handle, row)
            if deadline is not None and now >= deadline:
                raise WaitTimeout(
                    f"task {handle.task_id} of run {self.run_id} is {state} after {timeout}s",
                    run_id=self.run_id,
                    task_id=handle.task_id,
                    state=state,
                )
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - now)))
            pause = min(pause * 2, POLL_MAX_S)

    def _failed_for_good(self, handle: MaTask, row: dict[str, Any]) -> bool:
        """A failed task: whether its retry policy allows no more attempts (the rule the
        controller applies, maze/head/retry.py)."""
        meta = handle.meta
        policy = RetryPolicy(
            max_retries=meta.max_retries,
            backoff_seconds=meta.retry_backoff_seconds,
            retry_on=tuple(dict.fromkeys(canonical_error_type(n) for n in meta.retry_on)),
        )
        given = row.get("error") or {}
        error = TaskError(
            **{k: v for k, v in given.items() if k in _ERROR_FIELDS and k not in ("error_type", "message")},
            error_type=str(given.get("error_type", "user_code")),
            message=str(given.get("message", "")),
        )
        return next_attempt_delay_ms(policy, error, int(row.get("failures") or 0)) is None

    def _look_around(self, handle: MaTask, row: dict[str, Any]) -> None:
        """A task still pending: raise TaskFailed if it can never run."""
        for up in row.get("upstream") or []:
            upstream = self._wf.tasks.get(up)
            if upstream is None:
                continue
            up_row = self._http.get(f"/runs/{self.run_id}/tasks/{up}")
            if up_row["state"] in TERMINAL - {"succeeded"} and (
                up_row["state"] == "cancelled" or self._failed_for_good(upstream, up_row)
            ):
                raise TaskFailed(
                    f"task {handle.task_name} ({handle.task_id}) cannot run: its upstream task "
                    f"{upstream.task_name} ({up}) ended {up_row['state']}",
                    error_type="upstream_failed",
                    run_id=self.run_id,
                    task_id=handle.task_id,
                    upstream_task_id=up,
                    upstream_error=up_row.get("error"),
                    origin="controller",
                )
        run = self.status()
        if run["state"] in TERMINAL:
            raise TaskFailed(
                f"task {handle.task_name} ({handle.task_id}) never ran: run {self.run_id} ended {run['state']}",
                error_type="cancelled",
                run_id=self.run_id,
                task_id=handle.task_id,
                origin="controller",
            )

    def _failure(self, handle: MaTask, error: dict[str, Any], fallback: str) -> TaskFailed:
        message = str(error.get("message") or fallback)
        details = {k: v for k, v in error.items() if k != "message"}
        details.setdefault("error_type", "task_failed")
        return TaskFailed(
            f"task {handle.task_name} ({handle.task_id}) failed: {message}",
            **details,
            run_id=self.run_id,
            task_id=handle.task_id,
        )

    def _result(self, row: dict[str, Any]) -> dict[str, Any]:
        result = row.get("result") or {}
        if not any(isinstance(v, dict) and MARKER in v for v in result.values()):
            return dict(result)
        # a value that is not plain data: its event carries it whole
        for event in reversed(self.client.get_run_events(self.run_id)):
            if (
                event["type"] == "attempt.succeeded"
                and event["task_id"] == row["task_id"]
                and event["attempt"] == row["attempt"]
            ):
                return dict(self.client.blobs.materialize(event)["result"])
        raise ValidationError(f"the result of task {row['task_id']} is not in the run's events")

    # ---- ending -------------------------------------------------------------------------------
    def finalize(self, result: Any = None) -> dict[str, Any]:
        """End the run `succeeded` with `result` (it shows in the run's result summary); tasks still
        queued or running are stopped. Returns `{"run_id", "seq", "state"}` (`succeeded`, or
        `finalizing` if the head answered before the end). Conflict if it has ended already."""
        form, needed = self.client.blobs.encode_input(result, "the run's result")
        self.client.blobs.upload(needed)
        body = (
            {"result": form["value"]}
            if "value" in form
            else {"encoded": base64.b64encode(form["encoded"]).decode()}
        )
        answer: dict[str, Any] = self._http.post(f"/runs/{self.run_id}/finalize", json=body)
        self._http.note_seen(int(answer["seq"]))
        return answer

    def cancel(self, reason: str = "") -> dict[str, Any]:
        """Cancel the run: running tasks are killed, and it ends `cancelled` (MaClient.cancel_run)."""
        return self.client.cancel_run(self.run_id, reason=reason)

    # ---- reading ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The run's snapshot (state, progress, task count, result summary once ended)."""
        return self.client.get_run(self.run_id)

    def get_events(self, after: int | None = None) -> list[dict[str, Any]]:
        """The run's events in the log (after stream sequence `after`)."""
        return self.client.get_run_events(self.run_id, after=after)

    def stream_events(self) -> Iterator[dict[str, Any]]:
        """The run's events live (SSE), from its start until it ends; resumes after a dropped
        connection."""
        return follow_events(self._http, self.run_id)
