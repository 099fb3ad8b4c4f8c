"""The OpenAPI document is the contract (README "The API's contract").

Schemathesis runs every check (`--checks all`: server errors, status codes, content types, response
schemas and headers, positive and negative data, undeclared methods, auth...) over a real head's
`/schema/openapi.json`, on an open head and on one that requires its token, with a bounded number
of examples per operation; every operation declares its errors with the one envelope; the docs
page at `/schema` loads nothing from elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest

from maze.api.app import create_app
from maze.api.docs import ASSETS_PATH, REDOC_VERSION, redoc_dir
from maze.api.openapi import (
    EXAMPLE_BLOB,
    EXAMPLE_LIVE_RUN_ID,
    EXAMPLE_RUN_ID,
    EXAMPLE_SHA256,
    EXAMPLE_TASK_ID,
    answers,
)
from maze.sdk.serialize import pickle_function
from tests.helpers import HeadProcess, wait_until

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 10  # per operation and phase: ~15 s for the whole document on this 2-core machine
SEED = 20261205  # the same cases on every run: a failure here is reproducible with this seed
OPEN_PROBES = {"/healthz", "/readyz"}
ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
LIVE_BACKOFF_S = 8.0  # how long the live example run waits before it ends by itself (a stream on it too)


def greet(text: str = "") -> dict[str, str]:
    print(f"greeting {text}")  # a line for the log routes to answer
    return {"result": f"Hello {text}"}


def hold(marker: str) -> dict[str, str]:
    """Fails the first time (the run then waits out a retry's backoff, holding no CPU), succeeds
    from then on: a retry of the run ends at once."""
    if not Path(marker).exists():
        Path(marker).write_text("held")
        raise RuntimeError("held once")
    return {"result": "released"}


def _submit(url: str, headers: dict[str, str], run_id: str, func: Any, task: dict[str, Any]) -> int:
    func_hash, code = pickle_function(func)
    body = {
        "run_id": run_id,
        "functions": {func_hash: code},
        "tasks": [{"func_hash": func_hash, "func_name": func.__name__, **task}],
    }
    resp = httpx.post(
        f"{url}/runs",
        content=msgspec.msgpack.encode(body),
        headers={**headers, "content-type": "application/msgpack"},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["seq"])


def _seed_examples(url: str, headers: dict[str, str], marker: Path) -> None:
    """What the document's examples name, so that they reach the routes' success answers: the
    example blob, the example run (its one task, `greet`) finished, and the live example run
    waiting out a retry's backoff (a cancel's 200; it ends by itself LIVE_BACKOFF_S later)."""
    resp = httpx.put(f"{url}/artifacts/sha256/{EXAMPLE_SHA256}", content=EXAMPLE_BLOB, headers=headers)
    assert resp.status_code in (200, 201), resp.text
    seq = _submit(
        url,
        headers,
        EXAMPLE_RUN_ID,
        greet,
        {"task_id": EXAMPLE_TASK_ID, "inputs": {"text": {"value": "Maze"}}, "outputs": ["result"]},
    )

    def finished() -> bool:
        run = httpx.get(f"{url}/runs/{EXAMPLE_RUN_ID}", params={"min_seq": seq}, headers=headers, timeout=30)
        return run.json()["state"] == "succeeded"

    wait_until(finished, timeout=60)
    _submit(
        url,
        headers,
        EXAMPLE_LIVE_RUN_ID,
        hold,
        {
            "task_id": "hold",
            "inputs": {"marker": {"value": str(marker)}},
            "outputs": ["result"],
            "max_retries": 1,
            "retry_backoff_seconds": LIVE_BACKOFF_S,
        },
    )

    def waiting() -> bool:
        task = httpx.get(f"{url}/runs/{EXAMPLE_LIVE_RUN_ID}/tasks/hold", headers=headers, timeout=30)
        return task.status_code == 200 and task.json()["state"] == "retry_wait"

    wait_until(waiting, timeout=60)


def _operations(url: str, headers: dict[str, str]) -> set[str]:
    doc = httpx.get(f"{url}/schema/openapi.json", headers=headers).json()
    return {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item}


def _schemathesis(url: str, report: Path, headers: dict[str, str]) -> None:
    """Every check over every operation of the head's document; fails with Schemathesis' own
    report (each failure with a curl line to reproduce it)."""
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/schema/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # one worker: with two, CPython 3.11's ast.parse (Hypothesis describes its filters with it)
        # raised "AST constructor recursion depth mismatch" in a thread now and then
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    began = time.monotonic()
    # a hang guard, not a speed bar: on a VM running 2.4x slower one day, 10 examples of every
    # operation took over 170 s
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=report.parent)
    output = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, output
    # every operation of the document was tested, none skipped: an operation left out would pass
    # without a single request
    suite = ET.parse(report).getroot()
    tested = {case.get("name") for case in suite.iter("testcase")} - {"Stateful tests"}
    assert tested == _operations(url, headers), output
    for case in suite.iter("testcase"):
        assert not list(case), (case.get("name"), output)  # no failure, error or skip
    assert "Tested: " in output
    print(f"schemathesis: {len(tested)} operations in {time.monotonic() - began:.1f} s")


@pytest.fixture(scope="module")
def public_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """A head that binds beyond loopback: it requires its API token on every route but the probes."""
    head = HeadProcess(tmp_path_factory.mktemp("public") / "head", extra=["--host", "0.0.0.0"])
    head.start()
    yield head
    assert head.stop() == 0, head.log()


def _auth(head: HeadProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {(head.data_dir / 'api-token').read_text().strip()}"}


@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing_on_an_open_head(head: HeadProcess, tmp_path: Path) -> None:
    """With the examples' runs and blob recorded: Schemathesis draws path ids from the examples, so
    this run reaches the success answers (their bodies, the SSE events and log lines, a cancel's
    200 on the live run and 409 on the ended one, a retry's 201), and the next one, on a head
    without them, the 404s."""
    _seed_examples(head.url, {}, tmp_path / "held")
    _schemathesis(head.url, tmp_path / "junit.xml", {})
    # the cancel's example reached its 200 (or 202): the live run did not end by itself

    def live_run() -> dict[str, Any]:
        run: dict[str, Any] = httpx.get(f"{head.url}/runs/{EXAMPLE_LIVE_RUN_ID}", timeout=30).json()
        return run

    wait_until(lambda: live_run()["state"] not in ("created", "running"), timeout=60)
    assert live_run()["state"] == "cancelled", live_run()
    for path in ("/runs/{run_id}/stream", "/runs/{run_id}/logs/stream"):
        _check_sse_events(head.url, path, EXAMPLE_RUN_ID)


def _check_sse_events(url: str, path: str, run_id: str) -> None:
    """Each event of the stream fits the document's event schema, its JSON `data` included
    (`contentSchema` is only an annotation to a JSON Schema validator: Schemathesis does not
    check it)."""
    doc = httpx.get(f"{url}/schema/openapi.json").json()
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    data_schemas = {
        kind["properties"]["event"]["const"]: kind["properties"]["data"]["contentSchema"]
        for kind in schema["oneOf"]
    }
    body = httpx.get(url + path.replace("{run_id}", run_id), timeout=30).text
    events = [dict(line.split(": ", 1) for line in block.split("\n")) for block in body.strip().split("\n\n")]
    assert [e["event"] for e in events][-1] == "end" and len(events) >= 2, body
    for event in events:
        jsonschema_rs.validate(schema, event)
        jsonschema_rs.validate(data_schemas[event["event"]], json.loads(event["data"]))


@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing_on_a_head_that_requires_its_token(
    public_head: HeadProcess, tmp_path: Path
) -> None:
    """The document declares the bearer scheme there, so `ignored_auth` also calls every operation
    without the token and with a wrong one, and must get a 401. Nothing is recorded first: the
    examples' ids are unknown here, which is how the routes' 404s get checked."""
    headers = _auth(public_head)
    doc = httpx.get(f"{public_head.url}/schema/openapi.json", headers=headers).json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    _schemathesis(public_head.url, tmp_path / "junit.xml", headers)


@pytest.mark.parametrize("token", [None, "secret"])
def test_every_operation_declares_its_errors_with_the_envelope(token: str | None) -> None:
    """What Schemathesis cannot see: statuses a test never provokes (a 401 on an open head, a 500, a
    503) are declared all the same, each with the envelope, and nothing else answers errors."""
    doc = create_app(SimpleNamespace(api_token=token)).openapi_schema.to_schema()  # type: ignore[arg-type]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            errors = {
                int(code): answer for code, answer in operation["responses"].items() if int(code) >= 400
            }
            assert 500 in errors, where
            assert (401 in errors) == (path not in OPEN_PROBES), where
            if operation.get("parameters") or operation.get("requestBody"):
                assert 400 in errors, where
            for code, answer in errors.items():
                if method == "head":
                    assert "content" not in answer, (where, code)  # HEAD answers carry no body
                    continue
                assert answer["content"] == {"application/json": {"schema": ENVELOPE}}, (where, code)
            if token and path in OPEN_PROBES:
                assert operation["security"] == [], where  # open on every head
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"type", "message", "details"}
    assert doc["components"]["schemas"]["ErrorEnvelope"]["required"] == ["error"]
    if token:
        assert doc["security"] == [{"bearer": []}]
    else:
        assert "security" not in doc


def test_a_status_the_document_does_not_describe_cannot_be_declared() -> None:
    with pytest.raises(ValueError, match="418"):
        answers(404, 418)


def test_options_and_405_name_every_method_of_a_path(head: HeadProcess) -> None:
    """Litestar 2 answered OPTIONS /runs with `Allow: OPTIONS, POST` (litestar#4169, worked around in
    maze/api/app.py); a 405 carries `Allow` too (RFC 9110)."""
    for path, methods in (
        ("/runs", {"GET", "POST", "OPTIONS"}),
        (f"/artifacts/sha256/{EXAMPLE_SHA256}", {"GET", "HEAD", "PUT", "OPTIONS"}),
    ):
        resp = httpx.options(f"{head.url}{path}")
        assert resp.status_code == 204
        assert set(resp.headers["allow"].split(", ")) == methods, path
        resp = httpx.request("DELETE", f"{head.url}{path}")
        assert resp.status_code == 405
        assert set(resp.headers["allow"].split(", ")) == methods, path
        assert resp.json()["error"]["type"] == "http_error"


def test_min_seq_past_the_end_of_the_log_is_a_409_at_once(head: HeadProcess) -> None:
    """It used to wait out the read barrier (10 s) and answer 503, as if retrying could help."""
    began = time.monotonic()
    resp = httpx.get(f"{head.url}/runs", params={"min_seq": 2**40}, timeout=30)
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["type"] == "conflict"
    assert error["details"]["min_seq"] == 2**40
    assert error["details"]["last_seq"] < 2**40
    assert time.monotonic() - began < 5


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [(tag, value) for name, value in attrs if name in ("src", "href") and value]


def _assets(page: str) -> list[tuple[str, str]]:
    parser = _Assets()
    parser.feed(page)
    return parser.refs


@pytest.mark.parametrize("path", ["/schema", "/schema/redoc"])
def test_the_docs_page_loads_only_what_the_head_serves(head: HeadProcess, path: str) -> None:
    """ReDoc came from a CDN and the page was blank without the internet: its script is now part
    of the package and the page names nothing of another origin."""
    page = httpx.get(f"{head.url}{path}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Redoc.init(" in page.text
    refs = _assets(page.text)
    scripts = [ref for tag, ref in refs if tag == "script"]
    assert scripts == [f"{ASSETS_PATH}/redoc.standalone.js"]
    for _, ref in refs:
        assert ref.startswith("data:") or (ref.startswith("/") and not ref.startswith("//")), ref
    packaged = (redoc_dir() / "redoc.standalone.js").read_bytes()
    script = httpx.get(f"{head.url}{scripts[0]}")
    assert script.status_code == 200
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert script.content == packaged
    assert (
        f'Version: "{REDOC_VERSION}"'.encode()
        in (redoc_dir() / "redoc.standalone.js.LICENSE.txt").read_bytes()
    )
    license_text = httpx.get(f"{head.url}{ASSETS_PATH}/LICENSE")
    assert license_text.status_code == 200 and "MIT License" in license_text.text


def test_with_auth_on_the_docs_need_the_token_like_every_route(public_head: HeadProcess) -> None:
    """README: every route but /healthz and /readyz requires the token, the document, its page and
    the page's script included."""
    headers = _auth(public_head)
    for path in ("/schema", "/schema/openapi.json", f"{ASSETS_PATH}/redoc.standalone.js"):
        refused = httpx.get(f"{public_head.url}{path}")
        assert refused.status_code == 401, path
        assert refused.json()["error"]["type"] == "unauthorized"
        assert httpx.get(f"{public_head.url}{path}", headers=headers).status_code == 200, path
    for path in OPEN_PROBES:
        assert httpx.get(f"{public_head.url}{path}").status_code == 200, path
