"""The public surface is locked: renaming or removing any of it must be a deliberate change here."""

from __future__ import annotations

import maze
from maze import DynamicRun, MaClient, MaTask, MaWorkflow, TaskOutput, TaskOutputs


def test_exports() -> None:
    assert sorted(maze.__all__) == sorted(
        [
            "Conflict",
            "DynamicRun",
            "FileInput",
            "MaClient",
            "MaTask",
            "MaWorkflow",
            "MazeError",
            "NotFound",
            "ReactWorkflow",
            "ResourceUnavailable",
            "SerializationError",
            "Skill",
            "TaskFailed",
            "TaskOutput",
            "TaskOutputs",
            "Unavailable",
            "ValidationError",
            "exec_code",
            "load_skill",
            "openai_llm_task",
            "read_file",
            "read_skill_file",
            "task",
            "write_file",
        ]
    )


def test_sdk_methods() -> None:
    for cls, names in {
        MaClient: [
            "create_workflow",
            "create_dynamic_run",
            "create_react_workflow",
            "get_agent_trace",
            "list_runs",
            "get_run",
            "get_run_tasks",
            "get_run_events",
            "follow_run_events",
            "resolve_run_id",
            "wait_run",
            "iter_runs",
            "close",
            "list_workspaces",
            "list_workspace_files",
            "upload_workspace_file",
            "upload_workspace_dir",
            "download_workspace_file",
            "preview_workspace_file",
            "delete_workspace_file",
            "delete_workspace",
        ],
        MaWorkflow: [
            "add_task",
            "get_tasks",
            "add_edge",
            "del_edge",
            "run",
            "get_results",
            "show_results",
            "get_task_result",
            "list_cached_runs",
            "clear_cache",
            "print_graph",
            "get_graph_mermaid",
            "get_graph_info",
            "draw_graph",
        ],
        DynamicRun: [
            "append_task",
            "wait_for_task",
            "finalize",
            "cancel",
            "status",
            "get_events",
            "stream_events",
        ],
        MaTask: ["delete"],
        TaskOutput: ["to_reference_string"],
        TaskOutputs: ["keys", "__getitem__"],
    }.items():
        for name in names:
            assert callable(getattr(cls, name)), f"{cls.__name__}.{name}"
