"""A worker's default node id: the same on each start on one machine, a different one for each
worker running there at once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from maze.workers import identity
from maze.workers.identity import _host, stable_node_id

_PRINT = "import sys; from pathlib import Path; from maze.workers.identity import stable_node_id as s; print(s(Path(sys.argv[1])))"


@pytest.fixture(autouse=True)
def _release_slots() -> Iterator[None]:
    """The slots this process takes are held as long as it lives; a test gives them back."""
    yield
    while identity._held:
        identity._held.pop().close()


def _in_a_process(data_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PRINT, str(data_dir)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_restarts_keep_the_id_and_workers_running_at_once_get_their_own(tmp_path: Path) -> None:
    first = _in_a_process(tmp_path)
    assert first and _in_a_process(tmp_path) == first  # a restart: the same node
    held = stable_node_id(tmp_path)  # this process runs a worker now, in slot 0
    assert held == first
    other = _in_a_process(tmp_path)  # a second worker beside it
    assert other != first and _in_a_process(tmp_path) == other
    assert stable_node_id(tmp_path) == other  # its slot is free again once it ended: held here now
    assert stable_node_id(tmp_path) not in (first, other)  # a third, while both are held
    slots = tmp_path / "worker-ids" / _host()  # kept per host: a shared home never mixes them
    assert sorted(p.name for p in slots.iterdir()) == ["0.id", "1.id", "2.id"]


def test_a_slot_holding_no_usable_id_of_this_host_gets_a_new_one(tmp_path: Path) -> None:
    slots = tmp_path / "worker-ids" / _host()
    slots.mkdir(parents=True)
    (slots / "0.id").write_text("otherhost-abc123")  # copied from another machine, say
    (slots / "1.id").write_text("not an id\n at all")
    first = stable_node_id(tmp_path)  # slot 0, held by this process from now on
    second = _in_a_process(tmp_path)  # slot 1
    assert first != second
    for node_id in (first, second):
        assert node_id.startswith(f"{_host()}-") and " " not in node_id
    assert (slots / "0.id").read_text() == first and (slots / "1.id").read_text() == second
    assert _in_a_process(tmp_path) == second  # kept from now on
