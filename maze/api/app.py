"""The Litestar application."""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from maze.api import (
    admin,
    artifacts,
    builder,
    cluster,
    dynamic,
    health,
    live,
    logs,
    operations,
    react,
    run_artifacts,
    run_ids,
    runs,
    task_generation,
    workspace_tasks,
    workspaces,
)
from maze.api import playground as playground_routes
from maze.api.auth import BearerToken
from maze.api.docs import docs_assets, docs_page
from maze.api.errors import EXCEPTION_HANDLERS
from maze.api.identity import mark_maze_head
from maze.api.state import HeadState

API_DESCRIPTION = """Maze's HTTP API: submit workflow runs, follow them live (SSE), read their history,
tasks and events, and operate the cluster. Every error answers `{"error": {"type", "message",
"details"}}`. A head that binds beyond loopback requires `Authorization: Bearer <token>` on every
route but `/healthz` and `/readyz`, this document and its docs page included."""


def create_app(head: HeadState, playground: bool = False) -> Litestar:
    """The head's API; with `playground`, the Playground web app under /playground/ as well."""

    async def provide_head() -> HeadState:
        return head

    # every call of a head others can reach carries its token (maze/api/auth.py); the Playground's
    # own files are open (they hold no data), its calls to the API are not
    opened = playground_routes.open_handler if playground else None
    middleware = [BearerToken(head.api_token, opened)] if head.api_token else []

    # the document says what this head asks: a token, or none
    security: list[dict[str, list[str]]] | None = [{"bearer": []}] if head.api_token else None
    components = Components(
        security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")} if head.api_token else None
    )
    app = Litestar(
        route_handlers=[
            runs.submit_run,
            runs.list_runs,
            runs.get_run,
            runs.get_run_tasks,
            runs.get_run_task,
            runs.get_run_events,
            runs.stream_run_events,
            live.stream_run_changes,
            operations.cancel_run,
            dynamic.create_dynamic_run,
            dynamic.append_tasks,
            dynamic.finalize_run,
            react.create_react_run,
            react.get_run_trace,
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
            live.stream_cluster,
            artifacts.put_blob,
            artifacts.blob_exists,
            artifacts.get_blob,
            artifacts.missing_blobs,
            artifacts.limits,
            run_artifacts.get_run_artifacts,
            workspaces.list_workspaces,
            workspaces.list_workspace_files,
            workspaces.put_workspace_file,
            workspaces.get_workspace_file,
            workspaces.preview_workspace_file,
            workspaces.delete_workspace_file,
            workspaces.delete_workspace,
            workspace_tasks.list_workspace_tasks,
            workspace_tasks.put_workspace_task_file,
            workspace_tasks.get_workspace_task_file,
            workspace_tasks.delete_workspace_task_file,
            workspace_tasks.parse_task_source,
            task_generation.get_llm_config,
            task_generation.generate_tasks,
            builder.get_catalog,
            builder.list_workflows,
            builder.save_workflow,
            builder.get_workflow,
            builder.delete_workflow,
            builder.validate_workflow,
            builder.run_workflow,
            # the docs page's script, from this package (it works offline)
            docs_assets(),
            *(playground_routes.ROUTES if playground else []),
        ],
        dependencies={"head": Provide(provide_head)},
        middleware=middleware,
        before_send=[mark_maze_head],  # every answer says it comes from a Maze head
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="Maze",
            version="0.1.0",
            description=API_DESCRIPTION,
            path="/schema",
            render_plugins=[docs_page()],
            security=security,
            components=components,
            create_examples=False,
        ),
        request_max_body_size=64 * 1024 * 1024,
        logging_config=None,  # structlog is configured by the CLI; Litestar's queue logger broke at exit
    )
    _options_allow_every_method(app)
    return app


def _options_allow_every_method(app: Litestar) -> None:
    """Litestar 2 answers OPTIONS on a path whose handlers are registered one by one (`/runs`: GET
    and POST) with the first one's methods only (litestar#4169, fixed in 3.0): its default OPTIONS
    handler reads the methods of the route it was made for, which a later handler replaced. Point
    each at the route now serving its path (tests/test_openapi_contract.py checks the `Allow`)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        fn = handler.fn
        free = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False))
        made_for = free.get("self")
        if made_for is not None and isinstance(made_for.cell_contents, HTTPRoute):
            made_for.cell_contents = route
