"""Pure parts of workspaces and artifacts: path checks, overlays, and the controller's fold of
`artifact.registered` (which files a downstream attempt sees), with no NATS."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from maze.core.errors import ValidationError
from maze.events.artifacts import ArtifactRegistered, FileEntry, check_path, decode_manifest, overlay
from maze.events.authority import admissible
from maze.events.runs import RunCreated
from maze.events.tasks import AttemptStarted, AttemptSucceeded
from maze.events.work import WorkItem
from maze.head.scheduler import Scheduler
from tests.test_unit_scheduler import ONE, decide, items, joined, spec

WS = "a" * 64


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "bad", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", ".", "..", "a\\b", "a\x00b"]
)
def test_paths_that_leave_the_directory_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        check_path(bad)


def test_clean_relative_paths_pass() -> None:
    for good in ("input.csv", "out/result.txt", "a/b/c.d", ".hidden", "a..b"):
        assert check_path(good) == good


def test_a_manifest_with_a_bad_path_or_a_path_twice_is_refused() -> None:
    entry = FileEntry("x", sha("x"), 1)
    assert decode_manifest(msgspec.msgpack.encode([entry])) == [entry]
    with pytest.raises(ValidationError, match="not a clean relative path"):
        decode_manifest(msgspec.msgpack.encode([FileEntry("../x", sha("x"), 1)]))
    with pytest.raises(ValidationError, match="twice"):
        decode_manifest(msgspec.msgpack.encode([entry, entry]))
    with pytest.raises(ValidationError):
        decode_manifest(b"not msgpack at all")


def test_overlay_later_layers_win_and_a_file_never_shadows_a_directory() -> None:
    base = [FileEntry("a.txt", "1" * 64, 1), FileEntry("d", "2" * 64, 1)]
    top = [FileEntry("a.txt", "3" * 64, 1), FileEntry("d/inner", "4" * 64, 1)]
    assert overlay([base, top]) == [FileEntry("a.txt", "3" * 64, 1), FileEntry("d/inner", "4" * 64, 1)]


def _registered(item: WorkItem, path: str, content: str, node: str = "n") -> ArtifactRegistered:
    return ArtifactRegistered(
        run_id=item.run_id,
        task_id=item.task_id,
        attempt=item.attempt,
        node_id=node,
        path=path,
        sha256=sha(content),
        size=len(content),
        at_ms=1,
    )


def _run(core: Scheduler, item: WorkItem, *files: ArtifactRegistered) -> None:
    core.apply(AttemptStarted(run_id="r", task_id=item.task_id, attempt=item.attempt, node_id="n", at_ms=1))
    for event in files:
        core.apply(event)
    core.apply(
        AttemptSucceeded(
            run_id="r",
            task_id=item.task_id,
            attempt=item.attempt,
            node_id="n",
            at_ms=2,
            result=msgspec.msgpack.encode({"x": msgspec.Raw(ONE)}),
        )
    )


def test_downstream_sees_its_ancestors_files_the_nearest_winning() -> None:
    """a -> b -> c, and d beside them: c sees a's and b's files (b's where both wrote the same
    path), not d's; the view is the same whatever was folded in between."""
    core = Scheduler(queue_factor=1.0, grace_ms=60_000)
    core.apply(joined(cpus=8))
    tasks = [spec("a"), spec("b", reads=("a",)), spec("c", reads=("b",)), spec("d")]
    core.apply(RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=tasks, workspace=WS))
    first = {i.task_id: i for i in items(decide(core, 1))}
    assert set(first) == {"a", "d"}
    assert all(i.workspace == WS and i.files == [] for i in first.values())
    # a foreign node's report on a's attempt is refused by every reader
    foreign = _registered(first["a"], "stolen.txt", "x", node="other")
    assert not admissible(foreign, "n", "r")
    _run(
        core,
        first["a"],
        _registered(first["a"], "out.txt", "from a"),
        _registered(first["a"], "a.txt", "a"),
        foreign,
    )
    _run(core, first["d"], _registered(first["d"], "d.txt", "d"))
    b = items(decide(core, 2))[0]
    assert b.task_id == "b"
    assert [(f.path, f.sha256) for f in b.files] == [("a.txt", sha("a")), ("out.txt", sha("from a"))]
    _run(core, b, _registered(b, "out.txt", "from b"))
    c = items(decide(core, 3))[0]
    assert [(f.path, f.sha256) for f in c.files] == [("a.txt", sha("a")), ("out.txt", sha("from b"))]
    # sent again from the log: the same view
    assert core.work_from_log(("r", "c", c.attempt)) == c


def test_a_run_without_a_workspace_carries_no_files() -> None:
    core = Scheduler(queue_factor=1.0, grace_ms=60_000)
    core.apply(joined())
    core.apply(RunCreated(run_id="r", workflow_id="w", at_ms=0, tasks=[spec("a"), spec("b", reads=("a",))]))
    a, b = items(decide(core, 1))  # b follows a (maze/head/followers.py): placed with it
    _run(core, a, _registered(a, "out.txt", "x"))
    assert b.after == "a" and b.workspace == "" and b.files == []


def test_a_workspace_link_leading_outside_is_refused_one_inside_is_its_file(tmp_path) -> None:
    import pytest as _pytest

    from maze.core.errors import ValidationError
    from maze.sdk.workspace import scan

    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("a")
    (ws / "inside.txt").symlink_to(ws / "a.txt")
    assert [e.path for e, _ in scan(ws)] == ["a.txt", "inside.txt"]
    (ws / "outside.txt").symlink_to(secret)
    with _pytest.raises(ValidationError, match="leads outside"):
        scan(ws)


def test_staging_copies_only_content_that_matches_its_sha256(tmp_path) -> None:
    import hashlib as _hashlib

    from maze.workers.files import _copy_in

    good = b"staged content\n"
    cached = tmp_path / "cache" / "c"
    cached.parent.mkdir()
    cached.write_bytes(good)
    root = tmp_path / "attempt"
    root.mkdir()
    sha = _hashlib.sha256(good).hexdigest()
    assert _copy_in(cached, root / "a" / "f.txt", root, sha) is not None
    assert (root / "a" / "f.txt").read_bytes() == good
    cached.write_bytes(b"rewritten by someone\n")  # the cache is on a disk tasks can reach
    assert _copy_in(cached, root / "g.txt", root, sha) is None
    assert not (root / "g.txt").exists()
