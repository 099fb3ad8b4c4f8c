"""The `maze` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from maze.core import hops
from maze.core.errors import MazeError
from maze.core.logs import configure_logging
from maze.core.loop import run_loop
from maze.core.settings import BEATS_MISSED, MAX_HEARTBEAT_INTERVAL_S, env_settings, split_urls
from maze.core.tls import TLS_CA_ENV
from maze.sdk.messages import stands

app = typer.Typer(
    help="Maze: a task-level distributed runtime for agent workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
projections_app = typer.Typer(help="Read-model maintenance.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(projections_app, name="projections")
console = Console()
ServerUrl: Any = typer.Option(
    "http://localhost:8000", "--server-url", envvar="MAZE_SERVER_URL", help="Head API URL."
)
Token: Any = typer.Option(
    None,
    "--token",
    envvar="MAZE_TOKEN",
    help="The head's API token (a head on this machine: read from its data dir when not given).",
)


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def start(
    head: bool = typer.Option(
        False, "--head", help="Start a head: NATS (embedded unless --nats), controller, API, local worker."
    ),
    worker: bool = typer.Option(False, "--worker", help="Start a worker that joins a head."),
    addr: str = typer.Option("", "--addr", help="Head HOST:PORT (for --worker)."),
    port: int = typer.Option(8000, "--port", help="API port."),
    host: str = typer.Option("127.0.0.1", "--host", help="API bind address."),
    data_dir: str = typer.Option(
        "", "--data-dir", help="JetStream store + read models (default: $MAZE_DATA_DIR or ~/.maze)."
    ),
    nats: str = typer.Option("", "--nats", help="Use an existing NATS cluster: nats://a:4222,nats://b:4222"),
    worker_nats: str = typer.Option(
        "",
        "--worker-nats",
        help="Head with --nats: the NATS URLs (a worker account's credentials in them) handed to workers.",
    ),
    worker_js_api_prefix: str = typer.Option(
        "",
        "--worker-js-api-prefix",
        help="Head with --worker-nats: where the workers' account imports the JetStream API (e.g. JS.maze.API).",
    ),
    nats_port: int = typer.Option(4222, "--nats-port", help="Embedded NATS port."),
    nats_host: str = typer.Option(
        "127.0.0.1", "--nats-host", help="Embedded NATS bind address (0.0.0.0 for remote workers)."
    ),
    fsync: str = typer.Option(
        "always",
        "--fsync",
        help="always (default, durable) | interval (faster, may lose acked events on power loss).",
    ),
    cpus: float = typer.Option(None, "--cpus", help="CPUs this node offers (default: all)."),
    memory_mb: int = typer.Option(None, "--memory-mb", help="Memory MB this node offers (default: all)."),
    gpus: str = typer.Option(None, "--gpus", help="auto | none | 0,1 | 2x16GB (declared)."),
    node_id: str = typer.Option(None, "--node-id", help="Stable node id (default: from the host name)."),
    no_local_worker: bool = typer.Option(False, "--no-local-worker", help="Head without a local worker."),
    work_dir: str = typer.Option(
        None,
        "--work-dir",
        help="Worker: where each attempt gets its own directory (default: <tmp>/maze-work-<node id>; "
        "the head's local worker: <data dir>/work). Emptied at the worker's start but for its "
        "content cache (where it made it; a directory of other files is left alone).",
    ),
    no_sandbox: bool = typer.Option(
        False, "--no-sandbox", help="Worker: run no sandboxed tasks here, even with bubblewrap installed."
    ),
    sandbox_hide: list[str] = typer.Option(
        None,
        "--sandbox-hide",
        help="Worker: a path sandboxed tasks must not see (repeatable; data dirs and credentials are hidden already).",
    ),
    agent: bool = typer.Option(
        False, "--agent", help="Worker re-registers by itself after head/NATS restarts."
    ),
    heartbeat_interval: float = typer.Option(
        2.0,
        "--heartbeat-interval",
        help=f"Seconds between this node's heartbeats (at most {MAX_HEARTBEAT_INTERVAL_S:g}); the head "
        f"declares it lost after {BEATS_MISSED} of them without one, and never before --liveness-timeout.",
    ),
    liveness_timeout: float = typer.Option(
        10.0,
        "--liveness-timeout",
        help="Head: the least time a node may be silent before it is lost (longer for a node with a "
        "long --heartbeat-interval).",
    ),
    replicas: int = typer.Option(
        None,
        "--replicas",
        help="Head: JetStream replicas of the streams (default: min(3, servers in the NATS cluster)).",
    ),
    queue_factor: float = typer.Option(
        16.0, "--node-queue-factor", help="Head: how far past its CPUs a node may be queued (>= 1)."
    ),
    inline_value_kb: int = typer.Option(
        256, "--inline-value-kb", help="Head: task values larger than this travel as blobs (KB)."
    ),
    blob_max_mb: int = typer.Option(
        512, "--blob-max-mb", help="Head: the largest value or function the blob store takes (MB)."
    ),
    workspace_file_max_mb: int = typer.Option(
        512,
        "--workspace-file-max-mb",
        help="Head: the largest workspace file an upload may store (MB; no more than --blob-max-mb).",
    ),
    snapshot_interval: float = typer.Option(
        30.0, "--snapshot-interval", help="Head: seconds between the controller's snapshots (and at stop)."
    ),
    work_resend: float = typer.Option(
        5.0, "--work-resend", help="Head: seconds before work placed and not started is sent again."
    ),
    lease_seconds: float = typer.Option(
        5.0,
        "--lease-seconds",
        help="Head: the run controller's lease among heads on one NATS (a dead leader is replaced "
        "within about 1.3x this).",
    ),
    log_level: str = typer.Option(
        "warning", "--log-level", help="debug | info | warning | error: what goes to the log on stderr."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="MAZE_TOKEN",
        help="Head: the API token callers must send (default: made once in the data dir when the head "
        "binds more than loopback). Worker: the head's token.",
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Head: take API calls without a token even on a public address (unsafe)."
    ),
    playground: bool = typer.Option(
        False, "--playground", help="Head: serve the Playground web app at /playground/ on the API port."
    ),
    tls_cert: str = typer.Option("", "--tls-cert", help="Head: certificate for HTTPS and its embedded NATS."),
    tls_key: str = typer.Option("", "--tls-key", help="Head: the certificate's private key."),
    tls_ca: str = typer.Option(
        "",
        "--tls-ca",
        envvar="MAZE_TLS_CA",
        help="The CA to trust for the head's HTTPS and NATS (default: the system's).",
    ),
    llm_base_url: str = typer.Option(
        "",
        "--llm-base-url",
        envvar="MAZE_LLM_BASE_URL",
        help="Head: an OpenAI-compatible endpoint the Playground writes tasks from a prompt with "
        "(e.g. https://api.openai.com/v1).",
    ),
    llm_model: str = typer.Option(
        "", "--llm-model", envvar="MAZE_LLM_MODEL", help="Head: that endpoint's model."
    ),
    llm_api_key_env: str = typer.Option(
        "",
        "--llm-api-key-env",
        envvar="MAZE_LLM_API_KEY_ENV",
        help="Head: the NAME of the environment variable holding that endpoint's API key (not the key).",
    ),
    llm_timeout: float = typer.Option(
        60.0, "--llm-timeout", envvar="MAZE_LLM_TIMEOUT_S", help="Head: seconds each request to it may take."
    ),
) -> None:
    """Start a head (`--head`) or a worker (`--worker --addr HOST:PORT`)."""
    configure_logging(log_level)
    hops.configure(env_settings().trace_hops)
    if head == worker:
        fail("choose exactly one of --head or --worker")
    if fsync not in ("always", "interval"):
        fail("--fsync must be 'always' or 'interval'")
    if replicas is not None and replicas not in (1, 3, 5):
        fail("--replicas must be 1, 3 or 5")
    if queue_factor < 1:
        fail("--node-queue-factor must be at least 1")
    if not 0 < heartbeat_interval <= MAX_HEARTBEAT_INTERVAL_S:
        # (beyond it the heartbeat bucket forgets a node between two of its beats)
        fail(f"--heartbeat-interval must be > 0 and at most {MAX_HEARTBEAT_INTERVAL_S:g} seconds")
    if liveness_timeout <= 0:
        fail("--liveness-timeout must be > 0")
    if not 1 <= inline_value_kb <= 512:
        fail("--inline-value-kb must be between 1 and 512")
    if blob_max_mb < 1:
        fail("--blob-max-mb must be at least 1")
    if workspace_file_max_mb < 1:
        fail("--workspace-file-max-mb must be at least 1")
    if bool(tls_cert) != bool(tls_key):
        fail("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--tls-ca", tls_ca)):
        if path and not Path(path).is_file():
            fail(f"{flag} {path}: no such file")
    if lease_seconds < 0.5:
        fail("--lease-seconds must be at least 0.5")
    if snapshot_interval < 1 or work_resend < 0.1:
        fail("--snapshot-interval must be at least 1 s and --work-resend at least 0.1 s")
    try:
        if head:
            from maze.agents.task_writer import check_llm_settings
            from maze.head.process import Head

            check_llm_settings(llm_base_url, llm_model, llm_api_key_env, llm_timeout)
            if llm_api_key_env and not os.environ.get(llm_api_key_env):
                fail(
                    f"--llm-api-key-env {llm_api_key_env}: that variable is not set in the head's environment"
                )

            settings = env_settings(
                nats_urls=split_urls(nats) if nats else None,
                worker_nats_urls=split_urls(worker_nats) if worker_nats else None,
                worker_js_api_prefix=worker_js_api_prefix or None,
                data_dir=data_dir or None,
                host=host,
                port=port,
                nats_port=nats_port,
                nats_host=nats_host,
                fsync=fsync,
                local_worker=not no_local_worker,
                worker_cpus=cpus,
                worker_memory_mb=memory_mb,
                worker_gpus=gpus,
                node_id=node_id,
                heartbeat_interval=heartbeat_interval,
                liveness_timeout=liveness_timeout,
                node_queue_factor=queue_factor,
                stream_replicas=replicas,
                inline_value_kb=inline_value_kb,
                blob_max_mb=blob_max_mb,
                workspace_file_max_mb=workspace_file_max_mb,
                snapshot_interval_s=snapshot_interval,
                work_resend_s=work_resend,
                log_level=log_level,
                api_token=token or None,
                lease_s=lease_seconds,
                tls_cert=str(Path(tls_cert).resolve()) if tls_cert else "",
                tls_key=str(Path(tls_key).resolve()) if tls_key else "",
                tls_ca=str(Path(tls_ca).resolve()) if tls_ca else "",
                insecure=insecure,
                playground=playground,
                llm_base_url=llm_base_url or None,
                llm_model=llm_model or None,
                llm_api_key_env=llm_api_key_env or None,
                llm_timeout_s=llm_timeout,
            )
            run_loop(Head(settings).run())
        else:
            if not addr:
                fail("--worker needs --addr HEAD_HOST:PORT")
            from maze.workers.process import run_worker

            if tls_ca:  # what the worker trusts for the head's HTTPS and NATS (maze/core/tls.py)
                os.environ[TLS_CA_ENV] = str(Path(tls_ca).resolve())
            run_loop(
                run_worker(
                    addr,
                    node_id,
                    cpus,
                    memory_mb,
                    gpus,
                    agent,
                    heartbeat_interval,
                    token,
                    work_dir=Path(work_dir).resolve() if work_dir else None,
                    sandboxing=not no_sandbox,
                    sandbox_hidden=[Path(p).resolve() for p in sandbox_hide or []],
                )
            )
    except MazeError as exc:
        fail(exc.message)


def _client(server_url: str, token: str | None = None) -> Any:
    from maze.sdk.client import MaClient

    return MaClient(server_url, token=token)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except MazeError as exc:
        fail(exc.message)


def _ms(value: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value / 1000)) if value else "-"


RunIdArg: Any = typer.Argument(
    ..., help="The run's id, or its beginning (with or without 'run_') if no other run's id starts so."
)
RUN_ID_WIDTH = len("run_") + 32  # the ids Maze makes: never cut in a table


def _run_id(client: Any, given: str) -> str:
    """The full id of the run `given` names (its id, or a unique beginning of it): every command
    that takes a run id resolves it here."""
    resolved: str = _call(client.resolve_run_id, given)
    return resolved


def _id_column(table: Table, name: str, width: int = RUN_ID_WIDTH) -> None:
    table.add_column(name, no_wrap=True, min_width=width, overflow="fold")


_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _since(option: str, value: str | None) -> str | int | None:
    """`30m`, `2h`, `7d`, `1w` (that long ago), or what the head takes (ms, ISO 8601)."""
    if not value:
        return None
    number, unit = value[:-1], value[-1:].lower()
    if unit in _AGO and number.replace(".", "", 1).isdigit():
        return int((time.time() - float(number) * _AGO[unit]) * 1000)
    return value


@runs_app.command("list")
def runs_list(
    server_url: str = ServerUrl,
    token: str | None = Token,
    limit: int = typer.Option(20, "--limit", help="Runs per page (1..1000)."),
    state: str = typer.Option(
        None,
        "--state",
        help="Only runs in this state (created, running, succeeded, failed, ...); a,b for several.",
    ),
    kind: str = typer.Option(None, "--kind", help="Only runs of this kind (static, ...); a,b for several."),
    since: str = typer.Option(
        None, "--since", help="Created at or after: 30m, 2h, 7d ago, an ISO 8601 date-time (UTC) or ms."
    ),
    until: str = typer.Option(None, "--until", help="Created before: as --since."),
    search: str = typer.Option(
        None, "--search", help="Text in the workflow id or a task's or function's name (any case)."
    ),
    sort: str = typer.Option(
        "created", "--sort", help="created | finished (unfinished runs count as latest)."
    ),
    order: str = typer.Option("desc", "--order", help="desc (newest first) | asc."),
    cursor: str = typer.Option(None, "--cursor", help="Go on from a page: the cursor the last one printed."),
) -> None:
    """Run history, newest first, filtered and paged."""
    runs = _call(
        _client(server_url, token).list_runs,
        limit=limit,
        state=state,
        kind=kind,
        created_after=_since("--since", since),
        created_before=_since("--until", until),
        search=search,
        sort=sort,
        order=order,
        cursor=cursor,
    )
    names = ("run_id", "state", "kind", "tasks", "succeeded", "failed", "created", "finished")
    table = Table(*(Column(name, no_wrap=True) for name in names))
    for r in runs:
        table.add_row(
            r["run_id"],
            r["state"],
            r["kind"],
            str(r["task_count"]),
            str(r["tasks_succeeded"]),
            str(r["tasks_failed"]),
            _ms(r["created_at_ms"]),
            _ms(r["finished_at_ms"]),
        )
    # a run id is what the other commands take: never cut, whatever the terminal's width (a
    # narrow one wraps the lines instead)
    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    Console(width=max(console.width, natural)).print(table, crop=False)
    if runs.next_cursor:
        console.print(f"more: --cursor {runs.next_cursor}", highlight=False, soft_wrap=True)


def _why_not_done(task: dict[str, Any], run: dict[str, Any]) -> str:
    """Why a task has no result: its error, why it waits, or why it never ran or was stopped."""
    if task["error"]:
        error = task["error"]
        where = f" (attempt {error['attempt']} on {error['node_id']})" if error.get("node_id") else ""
        return f"[{error['error_type']}] {error['message']}{where}"
    if task.get("pending_reason"):
        return str(task["pending_reason"])
    if task["state"] == "cancelled":
        if task.get("started_at_ms") is None:
            return f"did not run: the run ended {run['state']} before it could start"
        return f"stopped: the run ended {run['state']} while it ran"
    if task["state"] == "retry_wait":
        return "waiting to be retried"
    return ""


@runs_app.command("show")
def runs_show(run_id: str = RunIdArg, server_url: str = ServerUrl, token: str | None = Token) -> None:
    """A run and its tasks: each task's result, or in full why it has none (its error, why it
    waits, or why it did not run); the run's error once."""
    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    run = _call(client.get_run, run_id)
    # a run of another kind than static says so (a dynamic one with its bound on tasks)
    kind = "" if run.get("kind", "static") == "static" else f"  kind={run['kind']}"
    if run.get("max_tasks") is not None:
        kind += f"  max_tasks={run['max_tasks']}"
    console.print(
        f"[bold]{run['run_id']}[/bold]  state={run['state']}{kind}  tasks={run['task_count']}  "
        f"created={_ms(run['created_at_ms'])}  finished={_ms(run['finished_at_ms'])}",
        highlight=False,
        soft_wrap=True,
    )
    if "result" in (run.get("result_summary") or {}):  # a dynamic run's finalize
        console.print(
            f"result: {json.dumps(run['result_summary']['result'])}", highlight=False, soft_wrap=True
        )
    tasks = _call(client.get_run_tasks, run_id)
    table = Table()
    _id_column(table, "task_id", max([len("task_") + 32, *(len(t["task_id"]) for t in tasks)]))
    for column in ("name", "state", "attempt", "node"):
        table.add_column(column)
    table.add_column("result / why not", overflow="fold")
    error_shown = False
    for t in tasks:
        if t["result"] is not None:
            detail = json.dumps(t["result"])
        else:
            detail = _why_not_done(t, run)
            error_shown |= bool(t["error"]) and t["task_id"] == run.get("failed_task_id")
        cells = (t["task_id"], t["name"], t["state"], str(t["attempt"]), t["node_id"] or "-", detail)
        table.add_row(*(Text(cell) for cell in cells))  # as they are: '[user_code]' is no markup
    console.print(table)
    if run.get("error") and not error_shown:  # an error of the run itself, not one task's
        error = run["error"]
        console.print(
            Text.assemble(("error", "red"), f": [{error['error_type']}] {error['message']}"), soft_wrap=True
        )
    elif run.get("failed_task_id"):
        console.print(f"[red]failed[/red]: task {run['failed_task_id']} (its error above)", highlight=False)


@runs_app.command("watch")
def runs_watch(run_id: str = RunIdArg, server_url: str = ServerUrl, token: str | None = Token) -> None:
    """Follow a run live (its SSE stream) with a progress bar until it ends; exit 1 unless it succeeded."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    run = _call(client.get_run, run_id)
    state = run["state"]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(f"{run_id} running", total=run["task_count"])
        done: set[str] = set()
        try:
            for event in client.follow_run_events(run_id):
                if not stands(event):
                    continue
                if event["type"] in ("attempt.succeeded", "attempt.failed") and event["task_id"] not in done:
                    if event["type"] == "attempt.succeeded":
                        done.add(event["task_id"])
                    progress.update(bar, completed=len(done))
                elif event["type"] == "run.finished":
                    state = event["state"]
                    progress.update(bar, description=f"{run_id} {state}")
        except MazeError as exc:
            fail(exc.message)
    console.print(f"run {run_id} {state}", highlight=False)
    if state != "succeeded":
        raise typer.Exit(1)


@runs_app.command("events")
def runs_events(
    run_id: str = RunIdArg,
    server_url: str = ServerUrl,
    token: str | None = Token,
    after: int = typer.Option(
        0,
        "--after",
        help="Only the events after this position: the 'seq' of an event shown before. Positions are "
        "those of the event log, which all runs share: they grow through a run but are not 1, 2, 3...",
    ),
) -> None:
    """A run's events from the log, in order, each with its position ('seq')."""
    client = _client(server_url, token)
    for event in _call(client.get_run_events, _run_id(client, run_id), after=after):
        console.print_json(json.dumps(event, default=str))


@runs_app.command("cancel")
def runs_cancel(
    run_id: str = RunIdArg,
    reason: str = typer.Option(
        "", "--reason", help="Why: recorded with the cancel and shown in the run's error."
    ),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """Cancel a run: withdraw its queued tasks, kill its running ones, end it `cancelled`."""
    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    result = _call(client.cancel_run, run_id, reason=reason)
    console.print(f"run {run_id} {result['state']}", highlight=False)


@runs_app.command("retry")
def runs_retry(
    run_id: str = RunIdArg,
    failed_only: bool = typer.Option(
        False, "--failed-only", help="Keep the results of the tasks that succeeded; run only the others."
    ),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """Run an ended run again as a new run of the same definition; prints the new run's id."""
    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    result = _call(client.retry_run, run_id, failed_only=failed_only)
    carried = f" ({result['carried']} task(s) kept from {run_id})" if result["carried"] else ""
    console.print(f"run {result['run_id']} retries {run_id}{carried}", highlight=False, soft_wrap=True)


@runs_app.command("logs")
def runs_logs(
    run_id: str = RunIdArg,
    tail: int = typer.Option(200, "--tail", min=0, max=10_000, help="Show the last N lines (0: none)."),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Then print lines as they come, until the run has ended."
    ),
    task_id: str | None = typer.Option(None, "--task-id", help="Only this task's lines."),
    server_url: str = ServerUrl,
    token: str | None = Token,
) -> None:
    """What a run's tasks printed (stdout, stderr, their child processes'), one line each:
    `task#attempt stream  line`."""
    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    # with --tail 0 the last line is still asked for: following goes on after it
    lines = _call(client.get_run_logs, run_id, tail=tail or (1 if follow else 0), task_id=task_id)
    after = lines[-1]["cursor"] if lines else None
    for line in lines[-tail:] if tail else []:
        _print_line(line)
    if follow:
        try:
            for line in client.follow_run_logs(run_id, task_id=task_id, after=after):
                _print_line(line)
        except MazeError as exc:
            fail(exc.message)


def _print_line(line: dict[str, Any]) -> None:
    # plain output, no markup: a task's text is printed as it is
    typer.echo(f"{line['task_id']}#{line['attempt']} {line['stream']:<6} {line['line']}")


@projections_app.command("rebuild")
def projections_rebuild(server_url: str = ServerUrl, token: str | None = Token) -> None:
    """Rebuild every read model from the event log and compare with the live one."""
    report = _call(_client(server_url, token).http.post, "/projections/rebuild")
    table = Table("table", "live rows", "rebuilt rows", "equal")
    for name, t in report["tables"].items():
        table.add_row(name, str(t["rows"]), str(t["rebuilt_rows"]), "yes" if t["equal"] else "[red]NO[/red]")
    console.print(table)
    if not report["equal"]:
        fail("rebuilt read models differ from the live ones")


@app.command()
def demo(
    port: int = typer.Option(8765, "--port", help="The demo head's API port."),
    data_dir: str = typer.Option(
        "", "--data-dir", help="Where the demo keeps its history (default: a new temp dir)."
    ),
    nats_port: int = typer.Option(14222, "--nats-port", help="The demo head's embedded NATS port."),
    playground: bool | None = typer.Option(
        None,
        "--playground/--no-playground",
        help="After the run, keep the head up with the Playground (the run in its Runs console) "
        "until Ctrl-C; --no-playground stops it at once. Default: keep it up when run from a "
        "terminal, stop at once otherwise (a script, CI).",
        show_default=False,
    ),
) -> None:
    """Start a head with embedded NATS, run the greet → uppercase workflow, print it, then keep the
    head up with the Playground showing the run (Ctrl-C stops it), or stop at once."""
    from maze.sdk.demo import run_demo
    from maze.sdk.local_head import LocalHead

    if playground is None:  # a person at a terminal looks at it; a script must not wait forever
        playground = sys.stdin.isatty() and sys.stdout.isatty()
    directory = Path(data_dir or tempfile.mkdtemp(prefix="maze-demo-"))
    extra = ["--playground"] if playground else []
    head = LocalHead(directory, port=port, nats_port=nats_port, quiet=False, extra=extra)
    # SIGTERM stops the head too, as Ctrl-C does (its default would leave the head running)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        head.start(min_nodes=1)
        summary = run_demo(head.url)
        console.print(f"[green]demo finished[/green]: {summary['state']}  (history in {directory})")
        if not playground:
            console.print(
                "To look at it in the Playground: `maze demo --playground` keeps the head up (or "
                "`maze start --head --playground`).",
                highlight=False,
                soft_wrap=True,
            )
        if playground:
            try:  # from here on, Ctrl-C is the normal way out
                console.print(
                    f"The run in the Playground: {head.url}/playground/runs/{summary['run_id']}  "
                    f"(every run: {head.url}/playground/). Ctrl-C stops the head.",
                    highlight=False,
                    soft_wrap=True,
                )
                proc = head.proc
                while proc is not None and proc.poll() is None:
                    time.sleep(0.5)
                fail(f"the demo head stopped on its own (exit {proc.returncode if proc else None})")
            except KeyboardInterrupt:
                pass
    except MazeError as exc:
        fail(exc.message)
    finally:
        head.stop()
    if summary["state"] != "succeeded":
        raise typer.Exit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    app()


cluster_app = typer.Typer(help="Cluster nodes, queues and joining.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f}G"


@cluster_app.command("resources")
def cluster_resources(server_url: str = ServerUrl, token: str | None = Token) -> None:
    """Every node: state, CPU / memory / GPU memory total, committed and free."""
    data = _call(_client(server_url, token).http.get, "/cluster/resources")
    table = Table(
        "node",
        "ip",
        "state",
        "CPU free/total",
        "mem free/total",
        "GPUs (free/total)",
        "run/wait",
        "heartbeat",
    )
    for n in data["nodes"]:
        gpus = (
            ", ".join(
                f"{g['index']}:{g['name']} {_gb(g['free_mem_mb'])}/{_gb(g['total_mem_mb'])}"
                for g in n["gpus"]
            )
            or "-"
        )
        age = "-" if n["heartbeat_age_s"] is None else f"{n['heartbeat_age_s']:.1f}s ago"
        table.add_row(
            n["node_id"],
            n["ip"],
            n["state"],
            f"{n['cpu']['free']:g}/{n['cpu']['total']:g}",
            f"{_gb(n['memory_mb']['free'])}/{_gb(n['memory_mb']['total'])}",
            gpus,
            f"{n['running']}/{n['waiting']}",
            age,
        )
    console.print(table)
    if data["unregistered_nodes"]:
        console.print(
            "[yellow]seen on NATS but not registered:[/yellow] "
            + ", ".join(u["node_id"] for u in data["unregistered_nodes"])
        )


@cluster_app.command("queues")
def cluster_queues(server_url: str = ServerUrl, token: str | None = Token) -> None:
    """Attempts per resource class: pending (waiting to be placed), queued (placed on a node, not
    started yet) and running; pending reasons, retries, timeouts and recent rejects."""
    data = _call(_client(server_url, token).http.get, "/cluster/queues")
    table = Table("resource class", "pending", "queued", "running")
    for cls, counts in sorted(data["by_resource_class"].items()):
        queued = counts.get("queued", counts["placed"])  # (a head from before the split: all placed)
        table.add_row(cls, str(counts["pending"]), str(queued), str(counts.get("running", 0)))
    console.print(table)
    for item in data["pending"][:20]:
        console.print(f"  pending {item['task_id']} ({item['name']}): {item['reason']}", highlight=False)
    for item in data["retry_waits"]:
        console.print(
            f"  retry {item['task_id']} attempt {item['next_attempt']} in {item['retry_in_s']:.1f}s "
            f"({item['reason']})",
            highlight=False,
        )
    for item in data["timeouts"]:
        console.print(
            f"  timeout {item['task_id']} on {item['node_id']}: {item['timeout_seconds']}s", highlight=False
        )
    for node, rejects in data["recent_rejects"].items():
        for r in rejects[-5:]:
            console.print(f"  rejected on {node}: {r['reason']}", highlight=False)


@cluster_app.command("join-command")
def cluster_join_command(server_url: str = ServerUrl, token: str | None = Token) -> None:
    """The command another machine runs to join this head as a worker. It carries the head's API
    token (when the head requires one), never NATS credentials: a joining worker asks the head for
    credentials of its own."""
    client = _client(server_url, token)
    _call(client.http.get, "/cluster/resources")  # the head answers, and takes this token
    head = httpx.URL(client.server_url)
    host = head.host
    if host in ("localhost", "127.0.0.1"):
        from maze.workers.capacity import local_ip

        host = local_ip()
        console.print(
            "[yellow]note:[/yellow] the head listens on loopback; start it with "
            "--host 0.0.0.0 --nats-host 0.0.0.0 for other machines to reach it",
            highlight=False,
        )
    # in the environment, not on the command line, where every user of that machine sees it (ps)
    env = f"MAZE_TOKEN={client.http.token} " if client.http.token else ""
    console.print(
        f"{env}maze start --worker --addr {host}:{head.port or 80} --agent --heartbeat-interval 2",
        highlight=False,
        soft_wrap=True,
    )


@cluster_app.command("reconcile-workers")
def cluster_reconcile(server_url: str = ServerUrl, token: str | None = Token) -> None:
    """Declare nodes that stopped heartbeating lost now, so their attempts are retried elsewhere."""
    data = _call(_client(server_url, token).http.post, "/cluster/reconcile")
    console.print(
        f"lost: {', '.join(data['lost_nodes']) or 'none'}; alive: {', '.join(data['alive_nodes'])}",
        highlight=False,
    )


# after every helper above: the artifacts commands use them
from maze.sdk.cli_artifacts import artifacts_app  # noqa: E402

app.add_typer(artifacts_app, name="artifacts")

from maze.sdk.workspace_cli import workspace_app  # noqa: E402 (it uses the helpers above)

app.add_typer(workspace_app, name="workspace")

from maze.sdk.cli_app import app_app, run_command  # noqa: E402 (it uses the helpers above)

app.add_typer(app_app, name="app")
app.command("run")(run_command)

from maze.sdk.cli_trace import runs_trace  # noqa: E402 (it uses the helpers above)

runs_app.command("trace")(runs_trace)
