"""Rebuild edges found by review: two rebuilds at once (the second is refused, the process never
wedges), the bulk fold equal to the live one with artifacts and odd text across flushes, the
collector back on and no scratch left when a replay fails, and a node's report with an integer no
read model can keep (refused by every reader, so no rebuild can fail on it)."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import msgspec
import psutil
import pytest

from maze.core.errors import Conflict
from maze.projections import db
from maze.projections.bulk import BulkFolder  # noqa


class _StubProjector:
    """What rebuild() uses of a Projector, with an empty log (nothing to replay, no NATS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = db.open_db(path)
        self.lock = threading.Lock()
        self.positions: dict[str, int] = {}
        self.nc = _StubNats()

        class _F:
            def forget(self) -> None: ...

        self.folder = _F()

    def cursor(self):
        return db.cursor(self.conn)


class _StubNats:
    def jetstream(self):
        return None


def test_two_rebuilds_at_once_do_not_wedge_the_read_model_process(tmp_path) -> None:
    """Two POST /projections/rebuild at once: the second takes projector.lock (a threading.Lock) on
    the event loop thread while the first holds it across awaits, so the loop blocks for ever."""
    from maze.projections.rebuild import rebuild

    projector = _StubProjector(tmp_path / "readmodels.duckdb")
    result: dict[str, object] = {}

    def main() -> None:
        async def both():
            return await asyncio.gather(
                rebuild(projector.nc, projector), rebuild(projector.nc, projector), return_exceptions=True
            )

        result["answers"] = asyncio.run(both())

    t = threading.Thread(target=main, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "the event loop is blocked on projector.lock: the read-model process is wedged"
    answers = result["answers"]
    assert isinstance(answers, list) and len(answers) == 2
    refused = [a for a in answers if isinstance(a, Conflict)]
    assert len(refused) == 1 and "running already" in refused[0].message
    assert not projector.lock.locked() and gc.isenabled()


def _odd_history():
    """Long-running runs that register artifacts (unicode paths) while others finish and are let go
    of; results, errors and names with odd text; runs straddling flushes; late reports."""
    from maze.events.artifacts import ArtifactRegistered
    from maze.events.codec import encode_value
    from maze.events.runs import RunCreated, RunFinished
    from maze.events.specs import TaskError
    from maze.events.tasks import AttemptFailed, AttemptPlaced, AttemptStarted, AttemptSucceeded
    from tests.test_unit_rebuild import _spec

    odd = ["héllo ☃ \U0001f600", "a\x00b", "", '\\"\n\t', "\u2028\ufeff", "x" * 70_000]
    events = []
    for i in range(10):
        run = f"r{i}"
        events.append(
            RunCreated(
                run_id=run, workflow_id=odd[i % len(odd)], at_ms=10 + i, tasks=[_spec("t"), _spec("u")]
            )
        )
        for task in ("t", "u"):
            key = {"run_id": run, "task_id": task, "attempt": 1, "node_id": "n"}
            events += [
                AttemptPlaced(**key, at_ms=11, session="s", reason=odd[(i + 1) % len(odd)]),
                AttemptStarted(**key, at_ms=12, pid=1000 + i, node_ip="10.0.0.1"),
            ]
            for j in range(3):
                events.append(
                    ArtifactRegistered(
                        **key, path=f"out/{odd[0]}-{j}.txt", sha256="ab" * 32, size=2**40 + j, at_ms=13
                    )
                )
            if task == "t" or i % 2:
                events.append(
                    AttemptSucceeded(
                        **key, at_ms=14, result=encode_value({"y": odd[i % len(odd)], "f": 0.1 + 0.2})
                    )
                )
            else:
                events.append(
                    AttemptFailed(
                        **key,
                        at_ms=14,
                        error=TaskError(
                            error_type="user_code",
                            message=odd[(i + 2) % len(odd)],
                            origin="task",
                            traceback=odd[0],
                        ),
                    )
                )
        events.append(RunFinished(run_id=run, at_ms=15, state="succeeded" if i % 2 else "failed"))
    for i in range(10):  # late artifacts and reports on runs let go of
        key = {"run_id": f"r{i}", "task_id": "u", "attempt": 1, "node_id": "n"}
        events.append(ArtifactRegistered(**key, path="late.bin", sha256="cd" * 32, size=1, at_ms=20))
        events.append(AttemptSucceeded(**key, at_ms=21, result=encode_value({"y": "late"})))
    # interleave runs: message k holds event k
    return [[("MAZE_RUNS", k + 1, [e])] for k, e in enumerate(events)]


@pytest.mark.parametrize(("flush_rows", "finished_rows"), [(1, 0), (3, 2), (7, 5), (100_000, 200_000)])
def test_the_bulk_fold_equals_the_live_one_with_artifacts_and_odd_text(
    tmp_path, flush_rows, finished_rows
) -> None:
    from tests.test_unit_rebuild import _bulk, _live

    batches = _odd_history()
    live = _live(tmp_path, batches)
    assert live["artifacts"], "artifacts were folded"
    assert _bulk(tmp_path, batches, flush_rows, finished_rows) == live


def test_no_scratch_and_no_shard_left_when_the_replay_fails(tmp_path) -> None:
    from maze.projections.rebuild import replayed

    class _Broken:
        @property
        def connected_url(self):
            raise RuntimeError("nats went away")

    async def replay() -> None:
        async with replayed(_Broken(), tmp_path, {"MAZE_RUNS": 5}):
            raise AssertionError("never replayed")

    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="nats went away"):
        asyncio.run(replay())
    assert gc.isenabled()
    assert not list(tmp_path.glob("bulk-*"))
    assert not [
        p
        for p in psutil.Process().children(recursive=True)
        if "maze.projections.shard_main" in " ".join(p.cmdline())
    ]


def test_a_nodes_report_with_an_integer_past_bigint_is_refused_by_every_reader() -> None:
    from maze.events.artifacts import ArtifactRegistered
    from maze.events.authority import admissible
    from maze.events.tasks import AttemptStarted

    key = {"run_id": "r", "task_id": "t", "attempt": 1, "node_id": "n"}
    big = ArtifactRegistered(**key, path="big.bin", sha256="ab" * 32, size=2**63, at_ms=4)
    assert not admissible(big, "n", "r")
    assert not admissible(AttemptStarted(**key, at_ms=3, pid=2**64 - 1), "n", "r")
    assert admissible(msgspec.structs.replace(big, size=2**63 - 1), "n", "r")


def test_every_event_field_that_can_hold_an_integer_is_checked_for_its_range() -> None:
    """The range check looks only where an event can hold an integer: each field (and each field of
    a struct a field holds, a node's `capacity.memory_mb`) that msgspec lets hold one (a value past
    BIGINT decodes to an int there) is checked, and nothing else."""
    import types
    import typing

    from maze.events.authority import int_paths
    from maze.events.catalog import Event

    def expected(cls: type, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        out = set()
        for field in msgspec.structs.fields(cls):
            try:
                held = msgspec.convert(2**63, field.type)
            except msgspec.ValidationError:
                held = None
            if isinstance(held, int) and not isinstance(held, bool):
                out.add((*prefix, field.name))
            union = typing.get_origin(field.type) in (typing.Union, types.UnionType)
            kinds = typing.get_args(field.type) if union else (field.type,)  # not into containers
            for kind in kinds:
                if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                    out |= expected(kind, (*prefix, field.name))
        return out

    checked = 0
    for cls in typing.get_args(Event):
        assert set(int_paths(cls)) == expected(cls), cls.__name__
        checked += len(int_paths(cls))
    assert checked >= 20  # at_ms on every event, attempts, pids, sizes, epochs
    assert ("capacity", "memory_mb") in int_paths(typing.get_args(Event)[10])  # NodeJoined


def test_a_nodes_session_with_a_nested_integer_past_bigint_is_refused() -> None:
    from maze.events.authority import admissible
    from maze.events.nodes import NodeCapacity, NodeJoined

    joined = NodeJoined(
        node_id="n",
        session="s",
        at_ms=1,
        hostname="h",
        ip="127.0.0.1",
        capacity=NodeCapacity(cpus=2.0, memory_mb=2**63),
    )
    assert not admissible(joined, "n")
    assert admissible(
        msgspec.structs.replace(joined, capacity=NodeCapacity(cpus=2.0, memory_mb=2**63 - 1)), "n"
    )
