"""Code written for the original Maze, the way its docs write it (/work/shared/seeds): the parts
that need no head (the decorator, add_task's checks, result messages, retry names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from maze import MaWorkflow, ValidationError, task
from maze.sdk.task import task_meta


@task(["text"], ["result"])
def positional_upper(params):
    text = params.get("text")
    return {"result": text.upper()}


@task(["a", "b"], ["sum"], {"cpu": 2, "cpu_mem": 256})
def positional_with_resources(params):
    return {"sum": params["a"] + params.get("b", 0)}


@task(inputs=["text", "suffix"], outputs=["result"])
def params_get_and_index(params):
    suffix = params.get("suffix") or ""
    return {"result": params["text"] + suffix}


def _workflow() -> MaWorkflow:
    # building a workflow needs no head: nothing is sent before run()
    return MaWorkflow("wf_unit", "http://127.0.0.1:9")


def test_positional_inputs_and_outputs() -> None:
    meta = task_meta(positional_upper)
    assert (meta.call_style, meta.inputs, meta.outputs) == ("params", ["text"], ["result"])
    meta = task_meta(positional_with_resources)
    assert meta.inputs == ["a", "b"] and meta.outputs == ["sum"]
    assert meta.resources == {"cpu": 2.0, "cpu_mem": 256, "gpu": 0.0, "gpu_mem": 0}
    assert positional_upper({"text": "hi"}) == {"result": "HI"}  # still a plain function


def test_positional_and_keyword_together_is_an_error() -> None:
    with pytest.raises(ValidationError, match="inputs both positionally and by keyword"):
        task(["a"], inputs=["a"])
    with pytest.raises(ValidationError, match="inputs first"):
        task(None, ["out"])


def test_params_style_inputs_read_with_get_may_be_left_out() -> None:
    assert task_meta(positional_upper).required_inputs == []
    assert task_meta(positional_with_resources).required_inputs == ["a"]
    assert task_meta(params_get_and_index).required_inputs == ["text"]
    wf = _workflow()
    wf.add_task(positional_upper, inputs={})  # the seed's params.get("text"): may be left out
    wf.add_task(params_get_and_index, inputs={"text": "x"})
    with pytest.raises(ValidationError, match=r"missing required input\(s\) \['text'\]"):
        wf.add_task(params_get_and_index, inputs={"suffix": "!"})
    with pytest.raises(ValidationError, match=r"unexpected input\(s\) \['other'\]"):
        wf.add_task(positional_upper, inputs={"other": 1})


def test_params_style_without_source_keeps_every_input_required() -> None:
    namespace: dict[str, object] = {}
    exec("def f(params):\n    return {'y': params.get('x')}\n", namespace)  # no source to read
    meta = task_meta(task(inputs=["x"], outputs=["y"])(namespace["f"]))  # type: ignore[arg-type]
    assert meta.required_inputs == ["x"]


def test_liveness_judges_each_node_by_its_own_heartbeat_interval() -> None:
    import time

    from maze.events.specs import NodeCapacity
    from maze.head.liveness import Liveness
    from maze.head.placer import NodeView

    liveness = Liveness(timeout_s=10)
    liveness.joined("slow", 20.0)  # the README's --heartbeat-interval 20
    liveness.joined("usual", 2.0)
    liveness.joined("old", 0.0)  # a worker that declared none: the head's timeout
    assert [liveness.timeout_for(n, "s") for n in ("slow", "usual", "old")] == [60.0, 10.0, 10.0]
    silent_since = time.monotonic() - 15  # joined 15 s ago (the head live since), no beat since
    liveness.live_since = silent_since
    for node in ("slow", "usual", "old"):
        liveness.join_seen[node] = silent_since
    views = [
        NodeView(n, "s", n, "127.0.0.1", NodeCapacity(cpus=1, memory_mb=1)) for n in ("slow", "usual", "old")
    ]
    assert sorted(lost.node_id for lost in liveness.stale(views, now_ms=0)) == ["old", "usual"]


def test_retry_on_takes_the_names_the_seeds_use_and_each_can_match() -> None:
    from maze.events.specs import RetryPolicy, TaskError
    from maze.head.retry import next_attempt_delay_ms

    # what each kind of failure looks like when it happens (maze/workers/worker.py, the scheduler)
    happens = {
        "timeout": TaskError(error_type="timed_out", message="attempt exceeded timeout", retryable=True),
        "node_lost": TaskError(error_type="node_lost", message="node went away", retryable=True),
        "resource_unavailable": TaskError(
            error_type="resource_unavailable", message="placed 21 times in a row", retryable=True
        ),
        "artifact_error": TaskError(
            error_type="artifact_error", message="store did not answer", retryable=True
        ),
    }
    for name, error in happens.items():
        policy = RetryPolicy(max_retries=2, retry_on=(name,))
        assert [next_attempt_delay_ms(policy, error, n) is not None for n in (1, 2, 3)] == [
            True,
            True,
            False,
        ], name
        other = RetryPolicy(max_retries=2, retry_on=("user_code",))
        assert next_attempt_delay_ms(other, error, 1) is None, name
    # without retry_on, resource_unavailable is not retried (the same placement would come back)
    assert next_attempt_delay_ms(RetryPolicy(max_retries=3), happens["resource_unavailable"], 1) is None


def test_a_lost_node_is_retried_max_retries_times_and_once_by_default() -> None:
    from maze.events.specs import RetryPolicy, TaskError
    from maze.head.retry import next_attempt_delay_ms

    lost = TaskError(error_type="node_lost", message="node went away", retryable=True)
    retried = [next_attempt_delay_ms(RetryPolicy(max_retries=3), lost, n) for n in (1, 2, 3, 4)]
    assert retried == [0, 0, 0, None]
    assert [next_attempt_delay_ms(RetryPolicy(), lost, n) for n in (1, 2)] == [0, None]  # the default
    left_out = RetryPolicy(max_retries=3, retry_on=("user_code",))
    assert next_attempt_delay_ms(left_out, lost, 1) is None


def test_workspace_options_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    wf = _workflow()
    wf.add_task(positional_upper, inputs={"text": "x"})
    missing = str(tmp_path / "no-such-dir")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"workspace_dir": missing, "artifact_mode": True}, "is not a directory"),
        ({"file_context": {"enabled": True, "workspace_dir": missing}}, "is not a directory"),
        ({"file_context": {"enabled": True, "artifact_store": {"type": "s3"}}}, "only .*head_http"),
        ({"file_context": {"enabled": True, "bogus": 1}}, "unknown key"),
        ({"file_context": {"enabled": True}, "workspace_dir": str(tmp_path)}, "not both"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValidationError, match=message):
            wf.run(**kwargs)


def test_every_cli_option_and_argument_has_help_text() -> None:
    import click
    import typer.main

    from maze.sdk.cli import app

    def walk(command: click.Command, path: str) -> list[str]:
        missing = [
            f"{path} {param.name}"
            for param in command.params
            if not getattr(param, "help", None) and param.name != "help"
        ]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                missing += walk(sub, f"{path} {name}")
        return missing

    assert walk(typer.main.get_command(app), "maze") == []


def test_readme_claims_unknown_output_key_add_edge_del_edge() -> None:
    wf = _workflow()
    a = wf.add_task(positional_upper, inputs={"text": "x"})
    b = wf.add_task(positional_upper, inputs={"text": a.outputs["result"]})
    c = wf.add_task(params_get_and_index, inputs={"text": "y"})
    with pytest.raises(KeyError, match="no output 'nope'"):
        a.outputs["nope"]  # declared outputs, as the seed's TaskOutputs.__getitem__ says
    wf.add_edge(b, c)
    assert c.upstream() == {b.task_id}
    with pytest.raises(ValidationError, match="cycle"):
        wf.add_edge(c, a)
    wf.del_edge(b, c)
    assert c.upstream() == set()
    with pytest.raises(ValidationError, match="carries data"):
        wf.del_edge(a, b)
