"""Workspace files for people (README "Workspaces"), against real heads on a real nats-server:
round trips through the SDK and the CLI, previews, the size limit, path traversal on every route,
a large streamed upload, and two heads of one cluster serving the same workspaces."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import nats
import pytest

from maze import MaClient
from maze.core.errors import Conflict, NotFound, PayloadTooLarge, ValidationError
from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.workspace_files import workspace_manifest
from tests.helpers import HeadProcess, NatsServer
from tests.test_unit_previews import png

SMALL_LIMIT_MB = 1


@pytest.fixture(scope="module")
def second_head(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """Another head on the same NATS, with a small workspace file limit."""
    proc = HeadProcess(
        tmp_path_factory.mktemp("second"),
        nats_url=nats_server.url,
        extra=["--no-local-worker", "--workspace-file-max-mb", str(SMALL_LIMIT_MB)],
    )
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob_stored(head: HeadProcess, sha: str) -> bool:
    return httpx.head(f"{head.url}/artifacts/sha256/{sha}").status_code == 200


def test_upload_list_download_preview_delete(client: MaClient, tmp_path: Path) -> None:
    files = {
        "notes/readme.txt": b"first line\nsecond line\nthird line\n",
        "data/table.csv": b'city,people\nParis,"2,1M"\nLyon,0.5M\n',
        "img/pixel.png": png(3, 2),
        "bin/blob.dat": bytes(range(256)) * 4,
        "dir with space/\u00fc.txt": "gr\u00fc\u00df\n".encode(),
        "empty.txt": b"",
    }
    for path, data in files.items():
        local = tmp_path / "up" / path
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        stored = client.upload_workspace_file("round", local, path)
        assert (stored["path"], stored["sha256"], stored["size"]) == (path, _sha(data), len(data))

    listed = client.list_workspace_files("round")
    assert [f["path"] for f in listed] == sorted(files)
    assert {f["path"]: f["sha256"] for f in listed} == {p: _sha(d) for p, d in files.items()}
    assert [f["path"] for f in client.list_workspace_files("round", prefix="data/")] == ["data/table.csv"]
    assert [f["path"] for f in client.list_workspace_files("round", prefix="d")] == [
        "data/table.csv",
        "dir with space/\u00fc.txt",
    ]
    summary = {w["name"]: w for w in client.list_workspaces()}["round"]
    assert (summary["files"], summary["bytes"]) == (len(files), sum(len(d) for d in files.values()))

    for path, data in files.items():
        got = client.download_workspace_file("round", path, tmp_path / "down" / path)
        assert got.read_bytes() == data
    resp = httpx.get(f"{client.server_url}/workspaces/round/files/notes/readme.txt")
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["etag"] == f'"{_sha(files["notes/readme.txt"])}"'
    assert resp.headers["content-disposition"].startswith('attachment; filename="readme.txt"')

    text = client.preview_workspace_file("round", "notes/readme.txt", lines=2)
    assert (text["kind"], text["lines"], text["truncated"]) == ("text", ["first line", "second line"], True)
    table = client.preview_workspace_file("round", "data/table.csv")
    assert table["kind"] == "csv"
    assert table["columns"] == ["city", "people"]
    assert table["rows"] == [["Paris", "2,1M"], ["Lyon", "0.5M"]]
    image = client.preview_workspace_file("round", "img/pixel.png")
    assert (image["kind"], image["content_type"], image["width"], image["height"]) == (
        "image",
        "image/png",
        3,
        2,
    )
    assert httpx.get(client.server_url + image["download"]).content == files["img/pixel.png"]
    binary = client.preview_workspace_file("round", "bin/blob.dat")
    assert (binary["kind"], binary["size"], binary["lines"]) == ("binary", 1024, None)

    # identical content is stored once: the same bytes under another path are one blob
    (tmp_path / "copy.txt").write_bytes(files["notes/readme.txt"])
    assert client.upload_workspace_file("round", tmp_path / "copy.txt")["sha256"] == _sha(
        files["notes/readme.txt"]
    )

    removed = client.delete_workspace_file("round", "notes/readme.txt")
    assert removed["path"] == "notes/readme.txt"
    with pytest.raises(NotFound):
        client.delete_workspace_file("round", "notes/readme.txt")
    with pytest.raises(NotFound):
        client.download_workspace_file("round", "notes/readme.txt", tmp_path / "gone.txt")
    assert not (tmp_path / "gone.txt").exists()
    assert "notes/readme.txt" not in [f["path"] for f in client.list_workspace_files("round")]
    assert client.preview_workspace_file("round", "empty.txt")["lines"] == []

    left = len(client.list_workspace_files("round"))
    assert client.delete_workspace("round") == left
    assert client.list_workspace_files("round") == []
    assert "round" not in [w["name"] for w in client.list_workspaces()]
    with pytest.raises(NotFound):
        client.delete_workspace("round")


def test_a_file_and_a_directory_cannot_share_a_path(client: MaClient, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x")
    client.upload_workspace_file("shapes", local, "a/b")
    with pytest.raises(Conflict, match="directory"):
        client.upload_workspace_file("shapes", local, "a")
    with pytest.raises(Conflict, match="is a file"):
        client.upload_workspace_file("shapes", local, "a/b/c")
    assert [f["path"] for f in client.list_workspace_files("shapes")] == ["a/b"]


def test_directory_upload_keeps_paths_and_refuses_links_that_lead_out(
    client: MaClient, nats_server: NatsServer, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "train.py").write_text("print('hi')\n")
    os.symlink(root / "train.py", root / "alias.py")  # inside: uploaded as what it points at
    stored = client.upload_workspace_dir("tree", root)
    assert [s["path"] for s in stored] == ["alias.py", "src/pkg/mod.py", "train.py"]
    manifest = asyncio.run(_manifest(nats_server.url, "tree"))
    assert manifest == [
        ("alias.py", _sha(b"print('hi')\n"), 12),
        ("src/pkg/mod.py", _sha(b"x = 1\n"), 6),
        ("train.py", _sha(b"print('hi')\n"), 12),
    ]

    (tmp_path / "secret").write_text("token")
    os.symlink(tmp_path / "secret", root / "leak")
    with pytest.raises(ValidationError, match="outside"):
        client.upload_workspace_dir("tree2", root)
    assert client.list_workspace_files("tree2") == []  # nothing sent


async def _manifest(url: str, name: str) -> list[tuple[str, str, int]]:
    nc = await nats.connect(url)
    try:
        return await workspace_manifest(nc.jetstream(), name)
    finally:
        await nc.close()


def test_the_size_limit_refuses_with_nothing_stored(second_head: HeadProcess, tmp_path: Path) -> None:
    client = MaClient(second_head.url)
    small = tmp_path / "small.txt"
    small.write_bytes(b"version 1\n")
    client.upload_workspace_file("limits", small, "f.bin")
    too_big = os.urandom(SMALL_LIMIT_MB * 1024 * 1024 + 1)
    (tmp_path / "big.bin").write_bytes(too_big)
    with pytest.raises(PayloadTooLarge, match="workspace-file-max-mb"):
        client.upload_workspace_file("limits", tmp_path / "big.bin", "f.bin")  # said by its Content-Length

    def chunked() -> Iterator[bytes]:  # no Content-Length: cut off by the route as it streams
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]

    resp = httpx.put(f"{second_head.url}/workspaces/limits/files/f.bin", content=chunked())
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["type"] == "payload_too_large"
    assert not _blob_stored(second_head, _sha(too_big))
    assert [(f["path"], f["size"]) for f in client.list_workspace_files("limits")] == [("f.bin", 10)]
    assert (
        client.download_workspace_file("limits", "f.bin", tmp_path / "back")
    ).read_bytes() == b"version 1\n"


def test_an_upload_cut_midway_leaves_the_previous_version(head: HeadProcess, tmp_path: Path) -> None:
    resp = httpx.put(f"{head.url}/workspaces/cut/files/f.txt", content=b"kept\n")
    assert resp.status_code == 201
    where = urlsplit(head.url)
    with socket.create_connection((where.hostname, where.port)) as sock:
        sock.sendall(
            b"PUT /workspaces/cut/files/f.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + b"z" * 1_500_000
        )
    # the head saw the client go; the file is as it was
    listed = httpx.get(f"{head.url}/workspaces/cut/files").json()
    assert [(f["path"], f["size"]) for f in listed] == [("f.txt", 5)]
    assert httpx.get(f"{head.url}/workspaces/cut/files/f.txt").content == b"kept\n"


BAD_PATHS = [
    "../x",
    "a/../../x",
    "a/..",
    "%2e%2e/x",
    "a/%2E%2E/b",
    "%2e%2e%2fx",
    "/abs",
    "%2fetc/passwd",
    "./a",
    "a//b",
    "a/",
    "a%00b",
    "a%0ab",
    "a%5cb",
    "a\\b",
    "..%5cx",
    "%ff",
]


def _raw(
    head: HeadProcess, method: str, target: str, body: bytes | None = None
) -> tuple[int, dict[str, object]]:
    """A request sent as written: no client library normalises `..` away."""
    where = urlsplit(head.url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_path_traversal_is_refused_on_every_route(head: HeadProcess, bad: str) -> None:
    for method, route, body in (
        ("PUT", "files", b"evil"),
        ("GET", "files", None),
        ("GET", "preview", None),
        ("DELETE", "files", None),
    ):
        status, answer = _raw(head, method, f"/workspaces/trav/{route}/{bad}", body)
        assert status == 400, (method, route, bad, answer)
        assert answer["error"]["type"] == "validation_error", answer  # type: ignore[index]
    assert httpx.get(f"{head.url}/workspaces/trav/files").json() == []


@pytest.mark.parametrize("prefix", ["../", "/etc", "a//", "%00", "a%5c"])
def test_bad_prefixes_and_names_are_refused(head: HeadProcess, prefix: str) -> None:
    status, answer = _raw(head, "GET", f"/workspaces/trav/files?prefix={prefix}")
    assert status == 400, answer
    for name in ("..", "a.b", "-x", "a%20b", "a%2e"):
        status, answer = _raw(head, "GET", f"/workspaces/{name}/files")
        assert status in (400, 404), (name, answer)
        status, answer = _raw(head, "PUT", f"/workspaces/{name}/files/x.txt", b"x")
        assert status in (400, 404), (name, answer)
    assert "trav" not in [w["name"] for w in httpx.get(f"{head.url}/workspaces").json()]


def test_a_large_upload_streams_through_the_head(client: MaClient, head: HeadProcess, tmp_path: Path) -> None:
    """50 MB up and down through the head, checked by sha256; the head's peak memory grows by far
    less than the file (it never holds it whole: request.stream() into the blob store's chunks)."""
    size = 50 * 1024 * 1024
    local = tmp_path / "big.bin"
    with local.open("wb") as out:
        for _ in range(size // (1024 * 1024)):
            out.write(os.urandom(1024 * 1024))
    assert head.proc is not None
    before = _peak_rss_kb(head.proc.pid)
    sent: list[int] = []
    stored = client.upload_workspace_file("large", local, "big.bin", progress=sent.append)
    assert sum(sent) == size and stored["size"] == size
    shown = client.preview_workspace_file("large", "big.bin")  # reads the first 256 KiB only
    assert (shown["kind"], shown["size"], shown["sha256"]) == ("binary", size, stored["sha256"])
    back = client.download_workspace_file("large", "big.bin", tmp_path / "back.bin")
    assert _file_sha(back) == _file_sha(local) == stored["sha256"]
    grown_mb = (_peak_rss_kb(head.proc.pid) - before) / 1024
    print(f"head peak memory grew by {grown_mb:.1f} MB")
    assert grown_mb < 40, f"the head's peak memory grew by {grown_mb:.0f} MB for a 50 MB file"


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def test_the_blob_store_writes_an_upload_while_it_is_still_coming(
    head: HeadProcess, nats_server: NatsServer
) -> None:
    """The code path of a workspace upload (BlobStore.put_unhashed): chunks are stored while the
    body is still being read, not after it has all arrived."""
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        store = BlobStore(nc, 512 * 1024 * 1024)
        stored_while_reading: list[int] = []

        async def body() -> AsyncIterator[bytes]:
            for i in range(40):
                if i == 39:
                    info = await js.stream_info(subjects.BLOB_STREAM)
                    stored_while_reading.append(int(info.state.messages))
                yield os.urandom(1024 * 1024)
                await asyncio.sleep(0)

        before = int((await js.stream_info(subjects.BLOB_STREAM)).state.messages)
        sha, size, created = await store.put_unhashed(body())
        assert size == 40 * 1024 * 1024 and created
        assert stored_while_reading[0] - before >= 16, (before, stored_while_reading)
        assert hashlib.sha256(await store.get(sha)).hexdigest() == sha
    finally:
        await nc.close()


def test_two_heads_on_one_nats_serve_the_same_workspaces(
    head: HeadProcess, second_head: HeadProcess, tmp_path: Path
) -> None:
    first, second = MaClient(head.url), MaClient(second_head.url)
    local = tmp_path / "shared.csv"
    local.write_bytes(b"k,v\n1,2\n")
    first.upload_workspace_file("shared", local, "t/shared.csv")
    assert [f["path"] for f in second.list_workspace_files("shared")] == ["t/shared.csv"]
    assert (
        second.download_workspace_file("shared", "t/shared.csv", tmp_path / "b.csv").read_bytes()
        == b"k,v\n1,2\n"
    )
    assert second.preview_workspace_file("shared", "t/shared.csv")["rows"] == [["1", "2"]]
    second.delete_workspace_file("shared", "t/shared.csv")
    assert first.list_workspace_files("shared") == []


def _maze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maze", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_the_cli_puts_lists_gets_and_removes(head: HeadProcess, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.txt").write_text("beta\n")
    server = ["--server-url", head.url]
    done = _maze("workspace", "put", "cli", str(tree), *server)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "2 file(s)" in done.stdout
    done = _maze("workspace", "put", "cli", str(tree / "a.txt"), "--path", "more/a2.txt", *server)
    assert done.returncode == 0, done.stderr + done.stdout
    listed = _maze("workspace", "ls", "cli", *server)
    assert listed.returncode == 0 and all(p in listed.stdout for p in ("a.txt", "sub/b.txt", "more/a2.txt"))
    assert "cli" in _maze("workspace", "ls", *server).stdout
    out = tmp_path / "got.txt"
    done = _maze("workspace", "get", "cli", "sub/b.txt", "-o", str(out), *server)
    assert done.returncode == 0, done.stderr + done.stdout
    assert out.read_text() == "beta\n"
    assert _maze("workspace", "rm", "cli", "sub/b.txt", *server).returncode == 0
    for args in (
        ("get", "cli", "sub/b.txt"),
        ("rm", "cli", "sub/b.txt"),
        ("get", "cli", "../x"),
        ("put", "bad name", str(tree)),
    ):
        failed = _maze("workspace", *args, *server)
        assert failed.returncode == 1, (args, failed.stdout)
        lines = failed.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, failed.stdout)
