"""The Litestar application."""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from maze.api import admin, artifacts, cluster, health, logs, operations, run_ids, runs
from maze.api.auth import BearerToken
from maze.api.errors import EXCEPTION_HANDLERS
from maze.api.identity import mark_maze_head
from maze.api.state import HeadState


def create_app(head: HeadState) -> Litestar:
    async def provide_head() -> HeadState:
        return head

    # every call of a head others can reach carries its token (maze/api/auth.py)
    middleware = [BearerToken(head.api_token)] if head.api_token else []

    return Litestar(
        route_handlers=[
            runs.submit_run,
            runs.list_runs,
            runs.get_run,
            runs.get_run_tasks,
            runs.get_run_task,
            runs.get_run_events,
            runs.stream_run_events,
            operations.cancel_run,
            operations.retry_run,
            logs.get_run_logs,
            logs.stream_run_logs,
            run_ids.match_run_ids,
            admin.health,
            health.healthz,
            health.readyz,
            health.metrics,
            admin.rebuild_projections,
            cluster.cluster_nats,
            cluster.cluster_resources,
            cluster.cluster_queues,
            cluster.reconcile_workers,
            cluster.cluster_diagnostics,
            artifacts.put_blob,
            artifacts.blob_exists,
            artifacts.get_blob,
            artifacts.missing_blobs,
            artifacts.limits,
        ],
        dependencies={"head": Provide(provide_head)},
        middleware=middleware,
        before_send=[mark_maze_head],  # every answer says it comes from a Maze head
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(title="Maze", version="0.1.0", path="/schema"),
        request_max_body_size=64 * 1024 * 1024,
        logging_config=None,  # structlog is configured by the CLI; Litestar's queue logger broke at exit
    )
