"""MaWorkflow, MaTask and output references: a static DAG built locally and submitted as one run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from maze.core.dag import find_cycle
from maze.core.errors import (
    BlobMissing,
    MazeError,
    NotFound,
    TooManyRequests,
    Unavailable,
    Unreachable,
    ValidationError,
)
from maze.events.values import is_plain
from maze.sdk import graph
from maze.sdk.blobs import BlobClient
from maze.sdk.file_inputs import FileInput, FileInputs, holds_file_input
from maze.sdk.http import Http, normalize_server_url
from maze.sdk.messages import MessageStream, render, summarize
from maze.sdk.serialize import pickle_function
from maze.sdk.stream import follow_events, submit_and_follow
from maze.sdk.task import TaskMeta, task_meta
from maze.sdk.workspace import file_context_of, upload_workspace

if TYPE_CHECKING:
    from maze.sdk.client import MaClient


SUBMIT_BUSY_TRIES = 12  # about 45 s of a head busy reading other submissions


class TaskOutput:
    """A reference to one output of a task; pass it as another task's input to wire them."""

    def __init__(self, task_id: str, output_key: str) -> None:
        self.task_id = task_id
        self.output_key = output_key

    def to_reference_string(self) -> str:
        return f"{self.task_id}.output.{self.output_key}"

    def __repr__(self) -> str:
        return f"TaskOutput({self.to_reference_string()!r})"


class TaskOutputs:
    def __init__(self, task_id: str, output_keys: list[str] | None) -> None:
        self.task_id = task_id
        self._keys = output_keys

    def __getitem__(self, key: str) -> TaskOutput:
        if self._keys is not None and key not in self._keys:
            raise KeyError(f"task {self.task_id} has no output {key!r}; its outputs are {self._keys}")
        return TaskOutput(self.task_id, key)

    def keys(self) -> list[str]:
        return list(self._keys or [])


class MaTask:
    def __init__(
        self,
        task_id: str,
        workflow: MaWorkflow,
        task_name: str,
        meta: TaskMeta,
        func_hash: str,
        inputs: dict[str, Any],
        task_type: str,
        input_forms: dict[str, dict[str, Any]] | None = None,
        blobs: dict[str, bytes] | None = None,
    ) -> None:
        self.task_id = task_id
        self.workflow_id = workflow.workflow_id
        self.server_url = workflow.server_url
        self.task_name = task_name
        self.meta = meta
        self.func_hash = func_hash
        self.inputs = inputs
        self.task_type = task_type
        self.after: set[str] = set()
        self.outputs = TaskOutputs(task_id, meta.outputs)
        self._workflow = workflow
        # literal inputs as POST /runs takes them, encoded once at add_task; blobs they need
        self._input_forms = input_forms or {}
        self._blobs = blobs or {}
        # file inputs (maze.FileInput): read and stored at each run(), their forms set then
        self._file_inputs = {k: v for k, v in inputs.items() if isinstance(v, FileInput)}

    def upstream(self) -> set[str]:
        deps = {ref.task_id for value in self.inputs.values() for ref in _references(value)}
        return deps | self.after

    def delete(self) -> None:
        """Remove this task from its workflow. Fails if another task consumes its outputs."""
        self._workflow._delete_task(self.task_id)

    def submission(self) -> dict[str, Any]:
        m = self.meta
        return {
            "task_id": self.task_id,
            "func_hash": self.func_hash,
            "name": self.task_name,
            "func_name": m.name,
            "call_style": m.call_style,
            "inputs": {
                k: ({"ref": v.to_reference_string()} if isinstance(v, TaskOutput) else self._input_forms[k])
                for k, v in self.inputs.items()
            },  # (a list or dict holding references is in _input_forms as a 'gather')
            "outputs": m.outputs,
            "required_inputs": m.required_inputs,
            "accepted_inputs": m.accepted_inputs,
            "resources": m.resources,
            "timeout_seconds": m.timeout_seconds,
            "max_retries": m.max_retries,
            "retry_backoff_seconds": m.retry_backoff_seconds,
            "retry_on": m.retry_on,
            "task_type": self.task_type,
            "after": sorted(self.after),
            # only when given: a submission without it is what it always was
            **({"artifacts": m.artifacts} if m.artifacts is not None else {}),
        }

    def __repr__(self) -> str:
        return f"MaTask({self.task_name!r}, {self.task_id})"


MAX_GATHER_DEPTH = 32  # lists or dicts of references nested this deep at most (as the head takes)


def _references(value: Any, depth: int = 0) -> list[TaskOutput]:
    """The task output references an input holds: itself, or those inside its lists and dicts (a
    fan-in: `[t.outputs["s"] for t in ts]`); tuples and sets are looked into too, to refuse them."""
    if isinstance(value, TaskOutput):
        return [value]
    if depth > MAX_GATHER_DEPTH or is_plain(value):
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [ref for item in value for ref in _references(item, depth + 1)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _references(item, depth + 1)]
    return []


class MaWorkflow:
    """A static workflow. Build it with add_task (an output passed as an input creates the edge),
    then `run()` submits it as one durable run; the same workflow can run many times."""

    def __init__(self, workflow_id: str, server_url: str, client: MaClient | None = None) -> None:
        self.workflow_id = workflow_id
        self.tasks: dict[str, MaTask] = {}
        self.functions: dict[str, bytes] = {}
        self._cache: dict[str, list[dict[str, Any]]] = {}
        self._client = client
        self._http_obj = client.http if client is not None else Http(server_url)
        self.server_url = self._http_obj.server_url
        self._blob_client = client.blobs if client is not None else BlobClient(self._http_obj)
        # each function is pickled once per workflow (a 100,000-task fan-out calls add_task
        # 100,000 times with the same function); the function is kept so its id stays its own
        self._pickled: dict[int, tuple[Callable[..., Any], str, bytes]] = {}
        # the run's kind in the run history: "app" for a maze.yaml application (maze/sdk/app.py)
        self.kind = "static"
        # called with (bytes sent, bytes to send) while run() uploads the workspace's files
        self.upload_progress: Callable[[int, int], None] | None = None

    # ---- building -----------------------------------------------------------------------------
    def add_task(
        self,
        task_func: Callable[..., Any] | None = None,
        inputs: dict[str, Any] | None = None,
        task_type: str = "code",
        task_name: str | None = None,
        **kwargs: Any,
    ) -> MaTask:
        """Add a task. `inputs` values are literals, `other_task.outputs["key"]` references (each
        makes an edge), or lists and dicts holding references among literals, nested as you like
        (a fan-in: `{"parts": [t.outputs["s"] for t in tasks]}`): the task gets the list or dict of
        the values. An unknown output key raises KeyError where the task declares its outputs (at
        `task.outputs["key"]`), else ValidationError when the run is submitted."""
        if task_func is None or not callable(task_func):
            raise ValidationError("add_task needs a function decorated with @task")
        if kwargs:
            raise ValidationError(f"add_task got unexpected argument(s) {sorted(kwargs)}")
        meta = task_meta(task_func)
        inputs = dict(inputs or {})
        forms: dict[str, dict[str, Any]] = {}
        blobs: dict[str, bytes] = {}
        for name, value in inputs.items():
            refs = _references(value)
            for ref in refs:
                self._check_reference(ref, name)
            if isinstance(value, TaskOutput):
                continue
            if isinstance(value, FileInput):
                value.path_for(name)  # a key that makes a clean path, or ValidationError now
                continue
            if holds_file_input(value):
                raise ValidationError(
                    f"input {name!r} of {meta.name}: a FileInput must be an input's whole value, "
                    "not inside a list or dict"
                )
            if refs:
                forms[name] = self._gather_form(value, f"input {name!r} of {meta.name}", blobs, 0)
            else:
                forms[name], needed = self._blob_client.encode_input(value, f"input {name!r} of {meta.name}")
                blobs.update(needed)
        missing = sorted(set(meta.required_inputs) - set(inputs))
        if missing:
            raise ValidationError(f"task {meta.name!r}: missing required input(s) {missing}")
        if meta.accepted_inputs is not None:
            extra = sorted(set(inputs) - set(meta.accepted_inputs))
            if extra:
                raise ValidationError(f"task {meta.name!r}: unexpected input(s) {extra}")
        cached = self._pickled.get(id(task_func))
        if cached is None:
            func_hash, blob = pickle_function(task_func)
            self._pickled[id(task_func)] = (task_func, func_hash, blob)
        else:
            _, func_hash, blob = cached
        self.functions[func_hash] = blob
        task_id = f"task_{uuid.uuid4().hex}"
        ma_task = MaTask(
            task_id, self, task_name or meta.name, meta, func_hash, inputs, task_type, forms, blobs
        )
        self.tasks[task_id] = ma_task
        return ma_task

    def _check_reference(self, ref: TaskOutput, name: str) -> None:
        if ref.task_id not in self.tasks:
            raise ValidationError(f"input {name!r} refers to task {ref.task_id}, not in this workflow")
        upstream = self.tasks[ref.task_id]
        if upstream.meta.outputs is not None and ref.output_key not in upstream.meta.outputs:
            raise ValidationError(
                f"input {name!r}: task {upstream.task_name!r} has no output {ref.output_key!r}"
            )

    def _gather_form(self, value: Any, where: str, blobs: dict[str, bytes], depth: int) -> dict[str, Any]:
        """A list or dict holding references as POST /runs takes it: `{"gather": [...] | {...}}`
        of item forms (references, gathers, and literals encoded one by one)."""
        if isinstance(value, TaskOutput):
            return {"ref": value.to_reference_string()}
        if not _references(value):
            form, needed = self._blob_client.encode_input(value, where)
            blobs.update(needed)
            return form
        if depth >= MAX_GATHER_DEPTH:
            raise ValidationError(
                f"{where}: lists or dicts of references nest {MAX_GATHER_DEPTH} deep at most"
            )
        if type(value) is list:
            return {
                "gather": [
                    self._gather_form(item, f"{where}[{i}]", blobs, depth + 1) for i, item in enumerate(value)
                ]
            }
        if type(value) is dict:
            for key in value:
                if type(key) not in (str, int):
                    raise ValidationError(
                        f"{where}: a dict holding task outputs needs str or int keys, not {key!r}"
                    )
            return {
                "gather": {
                    key: self._gather_form(item, f"{where}[{key!r}]", blobs, depth + 1)
                    for key, item in value.items()
                }
            }
        raise ValidationError(
            f"{where}: task outputs may be gathered in a list or a dict, not in a {type(value).__name__} "
            "(the task would get a list back)"
        )

    def get_tasks(self) -> list[dict[str, str]]:
        return [{"id": t.task_id, "name": t.task_name} for t in self.tasks.values()]

    def add_edge(self, source_task: MaTask, target_task: MaTask) -> None:
        """Make `target_task` wait for `source_task`. A cycle raises ValidationError."""
        for t in (source_task, target_task):
            if t.task_id not in self.tasks:
                raise ValidationError(f"task {t.task_id} is not in this workflow")
        if source_task.task_id == target_task.task_id:
            raise ValidationError("a task cannot depend on itself")
        target_task.after.add(source_task.task_id)
        cycle = find_cycle({t.task_id: t.upstream() for t in self.tasks.values()})
        if cycle:
            target_task.after.discard(source_task.task_id)
            raise ValidationError(f"edge would create a cycle: {' -> '.join(cycle)}")

    def del_edge(self, source_task: MaTask, target_task: MaTask) -> None:
        if source_task.task_id in target_task.after:
            target_task.after.discard(source_task.task_id)
            return
        if source_task.task_id in target_task.upstream():
            raise ValidationError(
                f"edge {source_task.task_name} → {target_task.task_name} carries data (an input "
                "references its output); change that input instead"
            )
        raise ValidationError(f"there is no edge {source_task.task_name} → {target_task.task_name}")

    def _delete_task(self, task_id: str) -> None:
        if task_id not in self.tasks:
            raise NotFound(f"task {task_id} is not in this workflow")
        users = [
            t.task_name
            for t in self.tasks.values()
            if t.task_id != task_id
            and task_id in {ref.task_id for value in t.inputs.values() for ref in _references(value)}
        ]
        if users:
            raise ValidationError(f"task {task_id} feeds {users}; delete or rewire those first")
        del self.tasks[task_id]
        for t in self.tasks.values():
            t.after.discard(task_id)

    # ---- running ------------------------------------------------------------------------------
    def run(
        self,
        workspace_dir: str | None = None,
        artifact_mode: bool = False,
        file_context: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> str:
        """Submit the workflow; returns the new run's id. `timeout_seconds`: the run ends
        `timed_out` this long after it is recorded (its running tasks are killed), unless it has
        ended before.

        Files: `workspace_dir=DIR` (or `artifact_mode=True`, or `file_context={"enabled": True,
        "workspace_dir": DIR, "artifact_store": {"type": "head_http", "base_url": URL}}`) runs each
        task in its own directory on its worker, staged with DIR's files and the files its upstream
        tasks made; task code uses relative paths (`Path("input.csv")`). The files travel through
        the head's content-addressed blob store (no shared filesystem needed), each content once;
        what a task creates or changes is registered as the run's artifacts
        (`MaClient.get_run_artifacts`)."""
        files_on, directory, base_url = file_context_of(workspace_dir, artifact_mode, file_context)
        if not self.tasks:
            raise ValidationError("the workflow has no tasks")
        used = {t.func_hash for t in self.tasks.values()}
        functions = {h: b for h, b in self.functions.items() if h in used}
        value_blobs = {sha: c for t in self.tasks.values() for sha, c in t._blobs.items()}
        run_id = f"run_{uuid.uuid4().hex}"
        blobs = self._blob_client
        with_files = [t for t in self.tasks.values() if t._file_inputs]
        file_inputs: FileInputs | None = None
        if with_files:  # every URL read and hashed before anything is sent
            file_store = self._files_store(base_url) if files_on else blobs
            file_inputs = FileInputs(with_files, file_store.limits()["blob_max_bytes"])
        try:
            return self._run(
                run_id, functions, value_blobs, files_on, directory, base_url, timeout_seconds, file_inputs
            )
        finally:
            if file_inputs is not None:
                file_inputs.close()

    def _run(
        self,
        run_id: str,
        functions: dict[str, bytes],
        value_blobs: dict[str, bytes],
        files_on: bool,
        directory: Path | None,
        base_url: str | None,
        timeout_seconds: float | None,
        file_inputs: FileInputs | None,
    ) -> str:
        blobs = self._blob_client
        for attempt in range(2):
            inline, upload = blobs.split_code(functions)
            blobs.upload({**upload, **value_blobs})
            if file_inputs is not None:
                file_inputs.upload(self._files_store(base_url) if files_on else blobs)
            tasks = [t.submission() for t in self.tasks.values()]
            try:
                body: dict[str, Any] = {
                    "workflow_id": self.workflow_id,
                    "run_id": run_id,
                    "tasks": tasks,
                    "functions": inline,
                }
                if timeout_seconds is not None:
                    body["timeout_seconds"] = float(timeout_seconds)
                if self.kind != "static":
                    body["kind"] = self.kind
                if files_on:
                    body["workspace"] = upload_workspace(
                        self._files_store(base_url), directory, self.upload_progress
                    )
                result = self._submit(body)
            except BlobMissing:
                if attempt == 1:
                    raise
                blobs.known.clear()  # the head lost what we thought it had (e.g. a new data dir)
                continue
            blobs.known.update(inline)
            return str(result["run_id"])
        raise AssertionError("unreachable")

    def _files_store(self, base_url: str | None) -> BlobClient:
        """Where a run's files go: the head's blob store (`base_url`, when given, is that head's
        address as seen from here)."""
        if base_url is None or normalize_server_url(base_url) == self._http().server_url:
            return self._blob_client
        return BlobClient(Http(base_url, token=self._http().token))

    def _submit(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            data = msgspec.msgpack.encode(body)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ValidationError(f"workflow cannot be encoded: {exc}") from exc
        # Safe to repeat: the same run id and body come back as the same run (never a second one).
        follow, unavailable, busy = True, 0, 0
        while True:
            try:
                if follow:
                    # one request submits and follows: get_results() reads the stream it opened
                    opened = submit_and_follow(self._http(), data)
                    self._http().opened.keep(str(opened.accepted["run_id"]), opened)
                    return opened.accepted
                result: dict[str, Any] = self._http().post(
                    "/runs", content=data, headers={"content-type": "application/msgpack"}
                )
                self._http().note_seen(int(result["seq"]))
                return result
            except TooManyRequests as exc:
                if exc.details.get("limit") == "submit_bytes":
                    # the head reads as many bytes of submissions at once as it allows: wait
                    busy += 1
                    if busy > SUBMIT_BUSY_TRIES:
                        raise
                    time.sleep(min(0.2 * 2**busy, 5.0))
                    continue
                if not follow:
                    raise
                # this client holds as many live streams as the head allows: submit alone, and
                # get_results() opens the stream when it is asked for
                follow = False
            except Unreachable:
                raise  # a wrong URL: said at once
            except Unavailable:
                unavailable += 1
                if unavailable > 3:
                    raise
                time.sleep(0.5 * 2 ** (unavailable - 1))

    def _http(self) -> Http:
        return self._http_obj

    def get_results(self, run_id: str, verbose: bool = True) -> list[dict[str, Any]]:
        """All result messages of a run (start_task, finish_task, task_exception for each task that
        failed, task_retry, finish_workflow), waiting for the run to finish. With `verbose`, each
        message is printed as it arrives. Cached after the first call."""
        messages = list(self._results(run_id, verbose))
        return messages

    def _results(self, run_id: str, verbose: bool) -> Iterator[dict[str, Any]]:
        """The run's messages as they come (or from the cache), printed with `verbose`; cached
        once the run has ended."""
        if not run_id:
            raise ValueError("run_id is required")
        cached = self._cache.get(run_id)
        if cached is not None:
            for message in cached:
                if verbose:
                    print(message, flush=True)
                yield message
            return
        messages: list[dict[str, Any]] = []
        stream = MessageStream(self.workflow_id)
        for event in follow_events(self._http(), run_id):
            for message in stream.feed(self._blob_client.materialize(event)):
                messages.append(message)
                if verbose:
                    print(message, flush=True)
                yield message
        self._cache[run_id] = messages

    def show_results(self, run_id: str, output_dir: str = "workflow_results") -> dict[str, Any]:
        """Follow the run, printing a readable line for each message as it arrives (failed and
        cancelled tasks included), and return a summary dict: `task_results`,
        `workflow_completed`, `has_exception`, `exception_tasks`, `state`, `cancelled_tasks`."""
        print(f"🔗 Connected to server, following run {run_id}...", flush=True)
        names = {t.task_id: t.task_name for t in self.tasks.values()}
        messages = []
        for message in self._results(run_id, verbose=False):
            messages.append(message)
            for line in render(message, names):
                print(line, flush=True)
        return summarize(messages)

    def get_task_result(self, run_id: str, task_id: str) -> dict[str, Any] | None:
        if run_id not in self._cache:
            raise ValueError(f"run {run_id} is not cached: call get_results or show_results first")
        for message in self._cache[run_id]:
            if message["type"] == "finish_task" and message["data"]["task_id"] == task_id:
                result: dict[str, Any] = message["data"]["result"]
                return result
        return None

    def list_cached_runs(self) -> list[str]:
        return list(self._cache)

    def clear_cache(self, run_id: str | None = None) -> None:
        if run_id is None:
            self._cache.clear()
        else:
            self._cache.pop(run_id, None)

    # ---- graph views --------------------------------------------------------------------------
    def print_graph(self) -> None:
        print(graph.ascii_graph(self))

    def get_graph_mermaid(self) -> str:
        return graph.mermaid(self)

    def get_graph_info(self) -> dict[str, Any]:
        return graph.info(self)

    def draw_graph(
        self,
        output_path: str = "workflow.png",
        method: str = "auto",
        figsize: tuple[float, float] = (12, 8),
        dpi: int = 300,
    ) -> str:
        return graph.draw(self, output_path, method, figsize, dpi)


__all__ = ["MaTask", "MaWorkflow", "MazeError", "TaskOutput", "TaskOutputs"]
