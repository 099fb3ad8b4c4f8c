"""What a head started with `--playground` serves without its API token, and what it does not.

The app's own files are open to GET/HEAD (a browser cannot add a header to a page load); nothing
else may be reached through that open path: not with `..`, encoded slashes or backslashes, a
symlink, a doubled slash, a query string, another method, or a path too long for the file system.
The live streams the app follows need the token and are bounded (hold_s, streams per client).

Requests are sent on a raw socket: an HTTP client would normalise `..` and `%2f` away before the
head ever saw them."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maze.api.playground import bundle_dir, bundle_file
from tests.helpers import HeadProcess

TOKEN = "playground-serving-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PER_CLIENT = 2


@pytest.fixture(scope="module")
def token_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """A head that requires its token, serves the Playground and lets one client hold 2 streams."""
    head = HeadProcess(
        tmp_path_factory.mktemp("pgs") / "head",
        extra=["--playground", "--token", TOKEN, "--no-local-worker"],
    )
    before = {k: os.environ.get(k) for k in ("MAZE_TOKEN", "MAZE_MAX_STREAMS_PER_CLIENT")}
    # the token lets the start-up wait read the head; the env var reaches the head's settings
    os.environ.update({"MAZE_TOKEN": TOKEN, "MAZE_MAX_STREAMS_PER_CLIENT": str(PER_CLIENT)})
    try:
        head.start()
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield head
    assert head.stop() == 0, head.log()


def raw(head: HeadProcess, method: str, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """One request with its target sent exactly as given."""
    with socket.create_connection(("127.0.0.1", head.port), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return int(lines[0].split()[1]), fields, body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def index_bytes() -> bytes:
    return (bundle_dir() / "index.html").read_bytes()


# every way to name something outside the bundle through the open prefix; each must answer the
# app's own index.html (a page of the app: the SPA fallback), or a 404 / 400 envelope
TRAVERSALS = [
    "/playground/../runs",
    "/playground/./../runs",
    "/playground/%2e%2e/runs",
    "/playground/..%2fruns",
    "/playground/%2e%2e%2fruns",
    "/playground/..%2f..%2fapi%2fauth.py",
    "/playground/..%5c..%5capi%5cauth.py",
    "/playground/../../cluster/nats?node_id=n1",
    "/playground/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/playground/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/playground//etc/passwd",
    "/playground/%2fetc%2fpasswd",
    "/playground/assets/../../../../../../etc/passwd",
    "/playground/assets/..%2f..%2f__init__.py",
    "/playground/assets/..%2f..%2fplayground.py",
    "/playground/assets/%2e%2e/%2e%2e/auth.py",
    "http://t/playground/../runs",
]


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_nothing_outside_the_bundle_is_read_through_the_open_prefix(
    token_head: HeadProcess, method: str, target: str
) -> None:
    status, fields, body = raw(token_head, method, target)
    if status == 200:  # the app's page, nothing else
        assert fields["content-type"].startswith("text/html"), (target, fields)
        assert int(fields["content-length"]) == len(index_bytes())
        assert body == (index_bytes() if method == "GET" else b"")
    else:
        assert status == 404, (target, status, body)
        if method == "GET":
            assert httpx.Response(404, content=body).json()["error"]["type"] == "not_found"
    assert b"root:" not in body and b"hmac" not in body and b'"run_id"' not in body


def test_the_api_behind_those_paths_still_needs_the_token(token_head: HeadProcess) -> None:
    for target in ("/runs", "//runs", "/runs?x=/playground/", "/cluster/nats?node_id=n1", "/runs/changes"):
        status, _, body = raw(token_head, "GET", target)
        assert status == 401, (target, status)
        assert httpx.Response(401, content=body).json()["error"]["type"] == "unauthorized"
    # with the token, a traversal is still only the app's page (the router never leaves the prefix)
    status, _, body = raw(token_head, "GET", "/playground/../runs", f"Authorization: Bearer {TOKEN}\r\n")
    assert status == 200 and body == index_bytes()


def test_only_get_and_head_are_open(token_head: HeadProcess) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _, body = raw(token_head, method, "/playground/", "Content-Length: 0\r\n")
        assert status in (401, 405), (method, status)
        assert b"<!doctype" not in body.lower()
    status, _, _ = raw(token_head, "POST", "/runs", "Content-Length: 2\r\n\r\n{}")
    assert status == 401


def test_head_answers_what_get_answers_without_a_body(token_head: HeadProcess) -> None:
    page = httpx.get(f"{token_head.url}/playground/")
    asset = page.text.split('src="')[1].split('"')[0]
    for target in ("/playground/", "/playground", asset, "/playground/runs/run_x"):
        got = httpx.get(token_head.url + target)
        status, fields, body = raw(token_head, "HEAD", target)
        assert got.status_code == status == 200 and body == b"", target
        assert fields["content-type"] == got.headers["content-type"]
        assert fields["content-length"] == got.headers["content-length"] == str(len(got.content))
        assert fields["cache-control"] == got.headers["cache-control"]
    status, fields, _ = raw(token_head, "HEAD", "/")
    assert status == 302 and fields["location"] == "/playground/"
    assert raw(token_head, "HEAD", "/playground/assets/nope.js")[0] == 404


def test_playground_with_and_without_slash_query_strings_and_near_misses(token_head: HeadProcess) -> None:
    index = index_bytes()
    for target in (
        "/playground",
        "/playground/",
        "/playground/?token=x",
        "/playground?a=1",
        "/playground/runs/r?x=1",
    ):
        status, fields, body = raw(token_head, "GET", target)
        assert (status, body) == (200, index), target
        assert fields["cache-control"] == "no-cache"
    for target in ("/playgroundX", "/playground-x/runs", "/playground.html", "/Playground/"):
        status, _, body = raw(token_head, "GET", target)
        assert status in (401, 404) and b"<!doctype" not in body.lower(), target
    # the cache rule follows the file served: index.html by way of assets/ is not "immutable"
    status, fields, body = raw(token_head, "GET", "/playground/assets/../index.html")
    assert status == 200 and body == index and fields["cache-control"] == "no-cache"


def test_the_app_may_not_be_framed_or_sniffed(token_head: HeadProcess) -> None:
    page = httpx.get(f"{token_head.url}/playground/")
    asset = page.text.split('src="')[1].split('"')[0]
    for resp in (page, httpx.get(token_head.url + asset)):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]


def test_bad_paths_are_a_400_not_a_crash(token_head: HeadProcess) -> None:
    for target in (
        "/playground/%00",
        "/playground/a%00b.js",
        "/playground/" + "a" * 5000,
        "/playground/assets/" + "b" * 300 + "/" + "c" * 2000,
    ):
        status, _, body = raw(token_head, "GET", target)
        assert status == 400, (target[:60], status)
        error = httpx.Response(400, content=body).json()["error"]
        assert error["type"] == "validation_error" and "Playground path" in error["message"]
    # a long name within the limit that the file system refuses (over 255 bytes) is a 404 / the page
    status, _, _ = raw(token_head, "GET", "/playground/assets/" + "d" * 600 + ".js")
    assert status == 404
    status, _, body = raw(token_head, "GET", "/playground/" + "e" * 600)
    assert status == 200 and body == index_bytes()


def test_bundle_file_never_leaves_the_bundle(tmp_path: Path) -> None:
    root = (tmp_path / "bundle").resolve()
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<html>")
    (root / "assets" / "app.js").write_text("js")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (root / "assets" / "out.js").symlink_to(secret)  # a symlink out of the bundle
    (root / "assets" / "dir-out").symlink_to(tmp_path)
    (root / "assets" / "in.js").symlink_to(root / "assets" / "app.js")  # one within it
    assert bundle_file(root, "assets/app.js") == root / "assets" / "app.js"
    assert bundle_file(root, "/assets/app.js") == root / "assets" / "app.js"
    assert bundle_file(root, "assets/in.js") == root / "assets" / "app.js"
    assert bundle_file(root, "assets/../index.html") == root / "index.html"
    for bad in (
        "assets/out.js",
        "assets/dir-out/secret.txt",
        "../secret.txt",
        "assets/../../secret.txt",
        str(secret),
        "//" + str(secret),
        "assets",  # a directory is not a file
        "",
        "x" * 300,  # the file system refuses the name
        "nope.js",
    ):
        assert bundle_file(root, bad) is None, bad


def test_without_the_flag_a_token_head_serves_no_app(tmp_path: Path) -> None:
    head = HeadProcess(tmp_path / "head", extra=["--token", TOKEN, "--no-local-worker"])
    os.environ["MAZE_TOKEN"] = TOKEN
    try:
        head.start()
    finally:
        os.environ.pop("MAZE_TOKEN", None)
    try:
        for target in ("/", "/playground", "/playground/", "/playground/assets/x.js"):
            status, fields, body = raw(head, "GET", target)
            assert status in (401, 404) and "location" not in fields, (target, status)
            assert b"<!doctype" not in body.lower()
    finally:
        assert head.stop() == 0, head.log()


# ---- the live streams the app follows ------------------------------------------------------------
STREAMS = ["/runs/changes", "/cluster/stream"]


@pytest.mark.parametrize("path", STREAMS)
def test_streams_refuse_without_the_token(token_head: HeadProcess, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        resp = httpx.get(token_head.url + path, headers=headers, params={"hold_s": 1})
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "unauthorized"


@pytest.mark.parametrize("path", STREAMS)
def test_streams_have_a_bounded_life(token_head: HeadProcess, path: str) -> None:
    for hold in ("0", "301", "-1", "x"):
        resp = httpx.get(token_head.url + path, headers=AUTH, params={"hold_s": hold})
        assert resp.status_code == 400, hold
        assert resp.json()["error"]["type"] == "validation_error"
    began = time.monotonic()
    with httpx.stream("GET", token_head.url + path, headers=AUTH, params={"hold_s": 1}, timeout=30) as resp:
        assert resp.status_code == 200
        text = "".join(resp.iter_text())  # the head closes it: this returns
    assert "event: end" in text
    assert time.monotonic() - began < 25  # ended by the head after hold_s, not by our timeout


@pytest.mark.parametrize("path", STREAMS)
def test_one_client_holds_a_bounded_number_of_streams(token_head: HeadProcess, path: str) -> None:
    with httpx.Client(base_url=token_head.url, headers=AUTH, timeout=30) as http:
        opened = [http.stream("GET", path, params={"hold_s": 30}) for _ in range(PER_CLIENT)]
        responses = [s.__enter__() for s in opened]
        try:
            assert [r.status_code for r in responses] == [200] * PER_CLIENT
            refused = http.get(path, params={"hold_s": 1})
            assert refused.status_code == 429
            assert refused.json()["error"]["type"] == "too_many_requests"
            assert "live streams open already" in refused.json()["error"]["message"]
        finally:
            for s in opened:
                s.__exit__(None, None, None)
        # the slots come back once the streams are closed
        deadline = time.monotonic() + 20
        while (again := http.get(path, params={"hold_s": 1})).status_code == 429:
            assert time.monotonic() < deadline, "a closed stream's slot never came back"
            time.sleep(0.2)
        assert again.status_code == 200
