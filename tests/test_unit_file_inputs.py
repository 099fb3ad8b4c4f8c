"""Pure parts of file inputs (`maze.FileInput`): the wire form the SDK sends (extension
`EXT_FILE` holding a `StagedFile`), how the head checks it, describes it and never spills it, what
the task process decodes it to, what the worker stages, and the names a FileInput accepts."""

from __future__ import annotations

import msgspec
import pytest
from msgspec.msgpack import Ext

from maze import FileInput
from maze.core.errors import ValidationError
from maze.events import values
from maze.events.artifacts import FileEntry
from maze.events.specs import Resources
from maze.events.values import EXT_FILE, StagedFile, wire_file
from maze.events.work import WorkItem
from maze.sdk.file_inputs import holds_file_input
from maze.workers.files import has_files, input_files

SHA = "c" * 64


def test_the_wire_form_is_an_extension_at_the_top() -> None:
    staged = StagedFile("inputs/data/data.csv", SHA, 12, "memory://data.csv")
    wire = wire_file(staged)
    assert values.ext_code(wire) == EXT_FILE == 3
    opaque = values.check_wire(wire, "input 'data'")
    assert isinstance(opaque, Ext) and values.staged_file(opaque) == staged
    # the same bytes for the same file, whoever encodes it
    assert wire == msgspec.msgpack.encode(
        Ext(3, msgspec.msgpack.encode(["inputs/data/data.csv", SHA, 12, "memory://data.csv"]))
    )
    assert values.describe(opaque) == {
        "__maze_value__": "file",
        "path": "inputs/data/data.csv",
        "size": 12,
        "sha256": SHA,
        "uri": f"maze://artifacts/sha256/{SHA}",
        "source": "memory://data.csv",
    }
    # the task gets the path, a str; the SDK rebuilds the same from the descriptor
    assert values.ValueDecoder().decode(wire) == "inputs/data/data.csv"
    assert values.from_descriptor(values.describe(opaque), fetch=None) == "inputs/data/data.csv"
    # it references stored content: never moved to the blob store as if it were a value
    assert EXT_FILE in values.REFERENCES


def test_the_worker_stages_what_the_inputs_name() -> None:
    inputs = msgspec.msgpack.encode(
        {
            "data": msgspec.Raw(wire_file(StagedFile("inputs/data/a.csv", SHA, 3))),
            "n": msgspec.Raw(msgspec.msgpack.encode(1)),
        }
    )
    item = WorkItem("r", "t", 1, "f", SHA, "kwargs", inputs, None, Resources())
    assert values.staged_files(inputs) == [StagedFile("inputs/data/a.csv", SHA, 3)]
    assert input_files(item) == [FileEntry("inputs/data/a.csv", SHA, 3)]
    assert has_files(item)
    plain = WorkItem("r", "t", 1, "f", SHA, "kwargs", msgspec.msgpack.encode({"n": 1}), None, Resources())
    assert not has_files(plain) and input_files(plain) == []


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "inputs/../../x", "inputs//x", "a\\b", ""])
def test_the_head_refuses_paths_that_leave_the_directory(path: str) -> None:
    with pytest.raises(ValidationError):
        values.check_wire(wire_file(StagedFile(path, SHA, 3)), "input 'data'")


def test_the_head_refuses_a_malformed_file_input() -> None:
    for bad in (
        StagedFile("inputs/a", "xyz", 3),
        StagedFile("inputs/a", SHA, -1),
        StagedFile("inputs/a", SHA.upper(), 3),
    ):
        with pytest.raises(ValidationError):
            values.check_wire(wire_file(bad), "input 'data'")
    with pytest.raises(ValidationError):
        values.check_wire(msgspec.msgpack.encode(Ext(EXT_FILE, b"\x01")), "input 'data'")


def test_names_come_from_the_url_and_are_checked() -> None:
    assert FileInput("memory://data.csv").name == "data.csv"
    assert FileInput("s3://bucket/dir/table.parquet?versionId=3").name == "table.parquet"
    assert FileInput("file:///tmp/x.txt").path_for("data") == "inputs/data/x.txt"
    assert FileInput("/tmp/x.txt", name="y.txt").path_for("k") == "inputs/k/y.txt"
    for bad_name in ("..", ".", "a/b", "a\\b", "a\x00b"):
        with pytest.raises(ValidationError):
            FileInput("memory://x", name=bad_name)
    for url in ("memory://", "s3://bucket/dir/", "file:///tmp/..", ""):
        with pytest.raises(ValidationError):
            FileInput(url)
    with pytest.raises(ValidationError):
        FileInput("memory://x.csv").path_for("..")
    with pytest.raises(ValidationError):
        FileInput("memory://x.csv").path_for("a/b")


def test_a_file_input_inside_a_container_is_found() -> None:
    f = FileInput("memory://x.csv")
    assert holds_file_input(f)
    assert holds_file_input([1, {"k": (f,)}])
    assert not holds_file_input([1, {"k": ("memory://x.csv",)}])


def test_the_log_keeps_no_credentials_or_tokens_of_a_file_inputs_url() -> None:
    from maze.sdk.file_inputs import recorded_url

    assert recorded_url("s3://bucket/data/x.csv") == "s3://bucket/data/x.csv"
    assert recorded_url("https://user:secret@host:8443/a/b.csv?X-Amz-Signature=tok#frag") == (
        "https://host:8443/a/b.csv"
    )
    assert recorded_url("memory://x.csv") == "memory://x.csv"
    assert recorded_url("/home/me/data.csv") == "/home/me/data.csv"
    assert recorded_url("file:///home/me/data.csv") == "file:///home/me/data.csv"
