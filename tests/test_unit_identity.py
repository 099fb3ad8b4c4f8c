"""A worker's default node id: the same on each start on one machine, a different one for each
worker running there at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from maze.workers.identity import stable_node_id

_PRINT = "import sys; from pathlib import Path; from maze.workers.identity import stable_node_id as s; print(s(Path(sys.argv[1])))"


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
    assert sorted(p.name for p in (tmp_path / "worker-ids").iterdir()) == ["0.id", "1.id", "2.id"]
