"""Pure rules: resource normalization and fit, placement, DAG checks, retry budget."""

from __future__ import annotations

import random

import pytest

from maze.core.dag import depth, find_cycle
from maze.core.errors import ValidationError
from maze.core.resources import Usage, add_usage, could_ever_fit, fits, fits_assigned, normalize_resources
from maze.events.nodes import NodeJoined
from maze.events.specs import GpuInfo, NodeCapacity, Resources, RetryPolicy, TaskError
from maze.head.placer import Placement, Placer
from maze.head.retry import next_attempt_delay_ms, retry_budget


def test_defaults_and_gpu_mem_implies_gpu() -> None:
    assert normalize_resources(None) == Resources(cpu=1.0, cpu_mem=0, gpu=0.0, gpu_mem=0)
    assert normalize_resources({"gpu_mem": 4096}) == Resources(cpu=1.0, gpu=1.0, gpu_mem=4096)
    assert normalize_resources({"cpu": 0.5}).cpu == 0.5


@pytest.mark.parametrize(
    "bad", [{"cpu": 0}, {"gpu": 1.5}, {"cpu_mem": 1.5}, {"cpu": float("nan")}, {"cpu": True}, {"disk": 1}]
)
def test_bad_resources(bad: dict) -> None:
    with pytest.raises(ValidationError):
        normalize_resources(bad)


def _gpu_node() -> NodeCapacity:
    return NodeCapacity(
        cpus=4, memory_mb=8000, gpus=[GpuInfo(0, "a", 16000, 16000), GpuInfo(1, "b", 8000, 8000)]
    )


def test_fit_and_best_fit_gpu() -> None:
    cap, usage = _gpu_node(), Usage()
    assert fits(cap, usage, Resources(gpu=1, gpu_mem=6000)) == [1]  # smallest card that holds it
    assert fits(cap, usage, Resources(gpu=1, gpu_mem=12000)) == [0]
    assert fits(cap, usage, Resources(gpu=2, gpu_mem=8000)) == [0, 1]
    assert fits(cap, usage, Resources(cpu=5)) is None
    assert could_ever_fit(cap, Resources(gpu=1, gpu_mem=20000)) is not None
    assert (
        could_ever_fit(NodeCapacity(cpus=2, memory_mb=100), Resources(gpu=1)) == "needs a GPU, node has none"
    )


def test_random_sequences_never_overcommit_a_node() -> None:
    rng = random.Random(7)
    cap = _gpu_node()
    usage = Usage()
    running: list[tuple[Resources, list[int]]] = []
    for _ in range(2000):
        if running and rng.random() < 0.45:
            req, gpus = running.pop(rng.randrange(len(running)))
            add_usage(usage, req, gpus, sign=-1)
        else:
            req = Resources(
                cpu=rng.choice([0.25, 0.5, 1, 2]),
                cpu_mem=rng.choice([0, 500, 2000]),
                gpu=rng.choice([0, 0, 0.5, 1]),
                gpu_mem=rng.choice([0, 3000, 7000]),
            )
            gpus = fits(cap, usage, req)
            if gpus is not None:
                assert fits_assigned(cap, usage, req, gpus)
                add_usage(usage, req, gpus)
                running.append((req, gpus))
        assert usage.cpu <= cap.cpus + 1e-9 and usage.cpu_mem <= cap.memory_mb
        for gpu in cap.gpus:
            assert usage.gpu_mem.get(gpu.index, 0) <= gpu.total_mem_mb
            assert usage.gpu_share.get(gpu.index, 0) <= 1 + 1e-9


def _join(placer: Placer, node_id: str, cap: NodeCapacity, session: str = "s1") -> None:
    placer.node_joined(
        NodeJoined(node_id=node_id, session=session, at_ms=0, hostname="h", ip="127.0.0.1", capacity=cap)
    )


def test_placer_least_loaded_and_gpu_only_where_it_fits() -> None:
    placer = Placer(queue_factor=1.0)
    _join(placer, "small", NodeCapacity(cpus=2, memory_mb=4000))
    _join(placer, "gpu", NodeCapacity(cpus=1, memory_mb=4000, gpus=[GpuInfo(0, "g", 16000, 16000)]))
    _join(placer, "big", NodeCapacity(cpus=4, memory_mb=4000))
    gpu_choice = placer.choose("r", Resources(cpu=1, gpu=1, gpu_mem=10000))
    assert isinstance(gpu_choice, Placement) and gpu_choice.node_id == "gpu" and gpu_choice.gpus == [0]
    placer.reserve(("r", "g1", 1), "gpu", "s1", Resources(cpu=1, gpu=1, gpu_mem=10000), [0])
    waiting = placer.choose("r", Resources(cpu=1, gpu=1, gpu_mem=10000))
    assert isinstance(waiting, str) and "waiting for free capacity" in waiting
    placements = []
    for i in range(6):
        choice = placer.choose("r", Resources(cpu=1))
        assert isinstance(choice, Placement)
        placer.reserve(("r", f"t{i}", 1), choice.node_id, choice.session, Resources(cpu=1), [])
        placements.append(choice.node_id)
    assert placements.count("big") == 4 and placements.count("small") == 2
    assert isinstance(placer.choose("r", Resources(cpu=1)), str)  # everything full: waits, no overcommit
    assert "no node can ever hold" in (placer.never_fits(Resources(cpu=8)) or "")


def test_placer_orphans_attempts_of_a_replaced_session() -> None:
    placer = Placer()
    _join(placer, "n", NodeCapacity(cpus=2, memory_mb=100))
    placer.reserve(("r", "t", 1), "n", "s1", Resources(cpu=1), [])
    assert placer.orphans == {}
    _join(placer, "n", NodeCapacity(cpus=2, memory_mb=100), session="s2")
    assert list(placer.orphans) == [("r", "t", 1)]
    placer.reserve(("r", "late", 1), "n", "s1", Resources(cpu=1), [])  # replayed after the new session
    assert list(placer.orphans) == [("r", "t", 1), ("r", "late", 1)]
    placer.release(("r", "t", 1))
    placer.release(("r", "late", 1))
    assert placer.nodes["n"].committed.cpu == 0 and placer.orphans == {}


def test_intended_placements_hold_capacity_until_folded() -> None:
    placer = Placer(queue_factor=1.0)
    _join(placer, "n", NodeCapacity(cpus=2, memory_mb=100))
    for task_id in ("a", "b"):
        choice = placer.choose("r", Resources(cpu=1))
        assert isinstance(choice, Placement)
        placer.intend(("r", task_id, 1), choice, Resources(cpu=1))
    assert isinstance(placer.choose("r", Resources(cpu=1)), str), "two intents fill the node"
    placer.reserve(("r", "a", 1), "n", "s1", Resources(cpu=1), [])  # a's placement comes back
    assert placer.nodes["n"].committed.cpu == 1 and placer.nodes["n"].intended.cpu == 1
    placer.forget_intent(("r", "b", 1))  # b's publish failed
    assert isinstance(placer.choose("r", Resources(cpu=1)), Placement)


def test_dag_cycle_and_depth() -> None:
    assert find_cycle({"a": set(), "b": {"a"}, "c": {"b"}}) is None
    cycle = find_cycle({"a": {"c"}, "b": {"a"}, "c": {"b"}})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert depth({"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}}) == 3
    chain = {f"t{i}": ({f"t{i - 1}"} if i else set()) for i in range(5000)}
    assert depth(chain) == 5000 and find_cycle(chain) is None


def test_retry_budget() -> None:
    lost = TaskError(error_type="node_lost", message="")
    user = TaskError(error_type="user_code", message="", retryable=True)
    assert retry_budget(RetryPolicy(), "node_lost") == 1
    assert retry_budget(RetryPolicy(), "user_code") == 0
    assert retry_budget(RetryPolicy(max_retries=2), "user_code") == 2
    assert retry_budget(RetryPolicy(max_retries=2, retry_on=["node_lost"]), "user_code") == 0
    assert retry_budget(RetryPolicy(max_retries=3), "invalid_result") == 0
    assert next_attempt_delay_ms(RetryPolicy(), lost, 1) == 0
    assert next_attempt_delay_ms(RetryPolicy(), lost, 2) is None
    policy = RetryPolicy(max_retries=3, backoff_seconds=0.5)
    assert [next_attempt_delay_ms(policy, user, a) for a in (1, 2, 3, 4)] == [500, 1000, 2000, None]
    asked = RetryPolicy(max_retries=2, retry_on=["artifact_error"])
    corrupt = TaskError(error_type="artifact_error", message="corrupt", retryable=False)
    unreachable = TaskError(error_type="artifact_error", message="store did not answer", retryable=True)
    assert next_attempt_delay_ms(asked, corrupt, 1) is None  # the same blob would fail the same way
    assert next_attempt_delay_ms(asked, unreachable, 1) == 0
