"""Re-record the golden histories: runs a real head, a few workflows, then stores every message of
MAZE_RUNS and MAZE_NODES (as stored, msgpack) and the read models they produce.

    python -m tests.golden.record      # only when an event changes on purpose; review the diff
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import msgspec
import nats

from maze import MaClient, task
from maze.events import subjects
from maze.projections.schema import TABLES
from maze.sdk.local_head import LocalHead

HERE = Path(__file__).parent


@task
def double(x: int = 0):
    return {"x": x * 2}


@task(inputs=["x"], outputs=["y"], max_retries=1)
def flaky_then_fail(params):
    raise ValueError(f"bad {params['x']}")


def workflows(url: str) -> None:
    client = MaClient(url)
    wf = client.create_workflow()
    a = wf.add_task(double, inputs={"x": 1})
    b = wf.add_task(double, inputs={"x": a.outputs["x"]})
    c = wf.add_task(double, inputs={"x": a.outputs["x"]})
    wf.add_edge(b, c)
    assert wf.show_results(wf.run())["state"] == "succeeded"
    wf = client.create_workflow()
    first = wf.add_task(double, inputs={"x": 3})
    bad = wf.add_task(flaky_then_fail, inputs={"x": first.outputs["x"]})
    wf.add_task(double, inputs={"x": bad.outputs["y"]})
    assert wf.show_results(wf.run())["state"] == "failed"


async def dump(nats_url: str) -> list[dict[str, object]]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    out = []
    for stream in (subjects.RUNS_STREAM, subjects.NODES_STREAM):
        last = (await js.stream_info(stream)).state.last_seq
        for seq in range(1, last + 1):
            msg = await js.get_msg(stream, seq)
            out.append({"stream": stream, "seq": seq, "subject": msg.subject, "data": msg.data})
    await nc.close()
    return out


def main() -> None:
    head = LocalHead(Path(tempfile.mkdtemp(prefix="maze-golden-")), extra=["--node-id", "golden-node"])
    head.start(min_nodes=1)
    try:
        workflows(head.url)
        rows = MaClient(head.url).http.post("/projections/rebuild")
        assert rows["equal"], rows
        messages = asyncio.run(dump(f"nats://127.0.0.1:{head.nats_port}"))
    finally:
        head.stop()
    (HERE / "history.msgpack").write_bytes(msgspec.msgpack.encode(messages))
    import duckdb

    conn = duckdb.connect(str(head.data_dir / "readmodels.duckdb"), read_only=True)
    snapshot = {
        t: [list(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()] for t in TABLES
    }
    (HERE / "readmodels.json").write_text(json.dumps(snapshot, indent=1, sort_keys=True, default=str))
    print(f"recorded {len(messages)} messages")


if __name__ == "__main__":
    main()
