"""The Playground's builder and files pages in a real browser (the harness of
tests/test_playground.py: Debian's chromium through Playwright, a real head started with
`--playground` and its local worker running the runs).

One story, as a user has it: upload a CSV on the Files page and preview it as a table; write a
workspace task in the editor (a syntax error is shown at its line first); drag it, Write File and
Read File onto the canvas and wire them; see the missing inputs on their nodes and fill them; save
the workflow; run it and watch every node turn green on the same canvas; download the file it
wrote from the run page; load the workflow back by name. Also: the Files page by drag-and-drop
(progress, preview, download, delete), a connection between different data types refused, and a
task generated from a prompt (a scripted OpenAI-compatible server on loopback) reviewed in the
editor, then saved."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maze import MaClient
from tests.helpers import HeadProcess
from tests.llm_server import Reply, ScriptedLLM, completion
from tests.test_playground import browser, page, pg_head, shot  # noqa: F401  (the shared harness)

WORD_COUNT = '''from maze import task


@task(outputs=["words"], data_types={"text": "str", "words": "int"})
def word_count(text: str = ""):
    """Counts the words of the text."""
    return {"words": len(text.split())}
'''

CSV = "item,price\napple,1.5\npear,2\nplum,2.5\n"

TASK_SOURCE = """from pathlib import Path

from maze import task


@task(outputs=["summary"], data_types={"column": "str", "summary": "str"})
def summarize(column):
    import csv

    rows = list(csv.DictReader(Path("data.csv").open()))
    total = sum(float(row[column]) for row in rows)
    return {"summary": f"{len(rows)} rows, {column} total {total:g}"}
"""

BROKEN_SOURCE = """from maze import task


@task(outputs=["summary"]
def summarize(column):
    return {"summary": column}
"""


def _use_workspace(pg: Any, name: str) -> None:
    field = pg.get_by_label("workspace", exact=True)
    field.fill(name)
    field.press("Enter")


def _drop_block(pg: Any, ref: str, x: int, y: int) -> None:
    pg.locator(f"[data-block='{ref}']").drag_to(
        pg.locator(".builder-canvas"), target_position={"x": x, "y": y}
    )


def _drag_handles(pg: Any, source: str, output: str, target: str, input_: str) -> None:
    """Drags from an output handle to an input handle, as a person does with the mouse."""
    start = pg.locator(f".react-flow__handle.source[data-nodeid='{source}'][data-handleid='{output}']")
    end = pg.locator(f".react-flow__handle.target[data-nodeid='{target}'][data-handleid='{input_}']")
    a, b = start.bounding_box(), end.bounding_box()
    pg.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    pg.mouse.down()
    pg.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=8)
    pg.mouse.up()


def _connect(pg: Any, source: str, output: str, target: str, input_: str, drawn: bool = True) -> None:
    """Connects two handles; one that should be drawn is dragged again (as a person would) when a
    busy machine's page moved under the first drag, up to three times."""
    edge = f".react-flow__edge[data-testid='rf__edge-{source}-{output}-{target}-{input_}']"
    count = pg.locator(".react-flow__edge").count()
    for _ in range(3):
        _drag_handles(pg, source, output, target, input_)
        if not drawn:
            return
        try:
            pg.wait_for_function(
                f"document.querySelectorAll('.react-flow__edge').length > {count}", timeout=5_000
            )
            return
        except Exception:
            continue
    raise AssertionError(f"no edge drawn from {source}.{output} to {target}.{input_} ({edge})")


def _node(pg: Any, node_id: str) -> Any:
    return pg.locator(f".builder-node[data-node='{node_id}']")


def _write_code(pg: Any, source: str) -> None:
    editor = pg.locator(".cm-content")
    editor.click()
    pg.keyboard.press("Control+A")
    pg.keyboard.press("Delete")
    pg.keyboard.insert_text(source)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x80\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_a_csv_uploaded_on_the_files_page_feeds_a_workflow_built_on_the_canvas(
    pg_head: HeadProcess,  # noqa: F811
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = MaClient(pg_head.url)
    # ---- Files: upload (the file picker), list, preview as a table
    page.goto(f"{pg_head.url}/playground/files")
    _use_workspace(page, "shop")
    local = tmp_path / "data.csv"
    local.write_text(CSV)
    page.get_by_label("choose files").set_input_files(str(local))
    page.wait_for_selector("[data-upload='data.csv'][data-done='true']")
    page.locator("tr[data-file='data.csv']").get_by_role("button", name="Preview").click()
    table = page.locator("[data-preview='data.csv'][data-kind='csv'] table.csv")
    table.wait_for()
    assert table.locator("th").all_inner_texts() == ["item", "price"]
    assert table.locator("tbody tr").count() == 3
    shot(page, "files-csv-preview")

    # ---- the editor: a syntax error at its line, then the task saved into the workspace
    page.goto(f"{pg_head.url}/playground/builder")
    page.get_by_label("workspace", exact=True).wait_for()
    assert page.get_by_label("workspace", exact=True).input_value() == "shop"  # the page's choice is kept
    page.get_by_role("button", name="New task").click()
    page.get_by_label("task file name").fill("shop_tasks.py")
    _write_code(page, BROKEN_SOURCE)
    page.get_by_role("button", name="Save task file").click()
    error = page.locator("[data-editor-error][data-line='4']")
    error.wait_for()
    assert "line 4" in error.inner_text() and "validation_error" in error.inner_text()
    page.locator(".cm-error-line").wait_for()
    shot(page, "builder-editor-error")
    _write_code(page, TASK_SOURCE)
    page.wait_for_selector("[data-editor-tasks] >> text=summarize(column)")
    page.get_by_role("button", name="Save task file").click()
    block = page.locator("[data-block='workspace:shop_tasks.py:summarize']")
    block.wait_for()

    # ---- three blocks dragged onto the canvas and wired
    _drop_block(page, "workspace:shop_tasks.py:summarize", 20, 30)
    _drop_block(page, "builtin:write_file", 320, 210)
    _drop_block(page, "builtin:read_file", 530, 420)
    for node_id in ("summarize", "write_file", "read_file"):
        _node(page, node_id).wait_for()
    _connect(page, "summarize", "summary", "write_file", "content")
    _connect(page, "write_file", "path", "read_file", "path")
    page.wait_for_function("document.querySelectorAll('.react-flow__edge').length === 2")
    # the inputs nobody gave: shown on their nodes, and Run waits
    page.wait_for_selector("[data-validation='invalid']")
    missing = _node(page, "write_file").locator("[data-problem='missing_input']")
    missing.wait_for()
    assert "'path'" in missing.inner_text()
    assert _node(page, "write_file").get_attribute("data-invalid") == "true"
    assert _node(page, "summarize").locator("[data-problem='missing_input']").count() == 1
    assert _node(page, "read_file").get_attribute("data-invalid") == "false"
    assert page.get_by_role("button", name="Run").is_disabled()
    shot(page, "builder-invalid")
    _node(page, "write_file").locator(".bn-title").click()
    page.get_by_label("input path").fill("out.txt")
    _node(page, "summarize").locator(".bn-title").click()
    page.get_by_label("input column").fill("price")
    page.wait_for_selector("[data-validation='valid']")
    assert _node(page, "write_file").get_attribute("data-invalid") == "false"

    # ---- saved by name, then run: the same canvas turns green, live
    page.get_by_label("workflow name").fill("../../etc/passwd")  # refused, and it says why
    assert page.get_by_role("button", name="Save").is_disabled()
    assert "letters, digits" in page.locator("[data-save-hint]").inner_text()
    page.get_by_label("workflow name").fill("csv-report")
    assert page.locator("[data-save-hint]").count() == 0
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector(".notice >> text=Saved as csv-report.")
    page.get_by_role("button", name="Run").click()
    banner = page.locator(".run-banner")
    banner.wait_for()
    run_id = banner.get_attribute("data-run")
    page.wait_for_selector(".run-banner[data-run-state='succeeded']")
    for node_id in ("summarize", "write_file", "read_file"):
        _node(page, node_id).and_(page.locator("[data-state='succeeded']")).wait_for()
    shot(page, "builder-run-succeeded")
    assert client.get_run_task(run_id, "read_file")["result"]["content"] == "3 rows, price total 6"

    # ---- the file the run wrote, downloaded from its run page
    page.get_by_role("link", name="Open the run page →").click()
    page.wait_for_selector(".page-head .badge[data-state='succeeded']")
    page.get_by_role("button", name="Artifacts").click()
    row = page.locator("table.artifacts tr", has_text="out.txt")
    with page.expect_download() as got:
        row.get_by_role("button", name="Download").click()
    assert Path(got.value.path()).read_text() == "3 rows, price total 6"
    shot(page, "run-page-artifacts")

    # ---- loaded back by name onto a fresh canvas, from another workspace: it switches to its own
    assert httpx.get(f"{pg_head.url}/workflows/csv-report").json()["workspace"] == "shop"
    page.get_by_role("link", name="Builder").click()
    _use_workspace(page, "elsewhere")
    page.get_by_label("saved workflows").select_option("csv-report")
    page.get_by_role("button", name="Load").click()
    page.wait_for_selector(".notice >> text=switched to its workspace shop")
    assert page.get_by_label("workspace", exact=True).input_value() == "shop"
    for node_id in ("summarize", "write_file", "read_file"):
        _node(page, node_id).wait_for()
    page.wait_for_function("document.querySelectorAll('.react-flow__edge').length === 2")
    page.wait_for_selector("[data-validation='valid']")
    _node(page, "write_file").locator(".bn-title").click()
    assert page.get_by_label("input path").input_value() == "out.txt"


def test_the_files_page_takes_dropped_files_previews_downloads_and_deletes(
    pg_head: HeadProcess,  # noqa: F811
    page: Any,  # noqa: F811
) -> None:
    page.goto(f"{pg_head.url}/playground/files")
    _use_workspace(page, "drops")
    page.wait_for_selector("td.empty")
    # a real drop event carrying files, as the browser makes one when files are dropped on it
    page.evaluate(
        """([csv, png]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([csv], "table.csv", {type: "text/csv"}));
            dt.items.add(new File([Uint8Array.from(png)], "dot.png", {type: "image/png"}));
            document.querySelector("[data-dropzone]").dispatchEvent(
                new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [CSV, list(_png(3, 2))],
    )
    page.wait_for_selector("[data-upload='table.csv'][data-done='true']")
    page.wait_for_selector("[data-upload='dot.png'][data-done='true']")
    progress = page.locator("progress[aria-label='upload table.csv']")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(len(CSV))
    files = httpx.get(f"{pg_head.url}/workspaces/drops/files").json()
    assert sorted(f["path"] for f in files) == ["dot.png", "table.csv"]

    page.locator("tr[data-file='dot.png']").get_by_role("button", name="Preview").click()
    page.locator("[data-preview='dot.png'][data-kind='image'] img.image-preview").wait_for()
    assert "3\u00d72" in page.locator("[data-preview='dot.png']").inner_text()
    shot(page, "files-image-preview")

    with page.expect_download() as got:
        page.locator("tr[data-file='table.csv']").get_by_role("button", name="Download").click()
    assert Path(got.value.path()).read_text() == CSV

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr[data-file='table.csv']").get_by_role("button", name="Delete").click()
    page.wait_for_selector("tr[data-file='table.csv']", state="detached")
    assert [f["path"] for f in httpx.get(f"{pg_head.url}/workspaces/drops/files").json()] == ["dot.png"]


def test_a_connection_between_different_data_types_is_refused(
    pg_head: HeadProcess,  # noqa: F811
    page: Any,  # noqa: F811
) -> None:
    page.goto(f"{pg_head.url}/playground/builder")
    page.locator("[data-block='builtin:read_file']").wait_for()
    # without an endpoint configured, Generate is disabled and the panel says why
    page.locator("[data-how-to]").wait_for()
    assert page.get_by_role("button", name="Generate").is_disabled()
    _drop_block(page, "builtin:read_file", 40, 40)
    _drop_block(page, "builtin:write_file", 420, 60)
    _node(page, "write_file").wait_for()
    _connect(page, "read_file", "size", "write_file", "content", drawn=False)  # int -> str
    refusal = page.locator("[data-refusal]")
    refusal.wait_for()
    assert "type mismatch" in refusal.inner_text() and "int" in refusal.inner_text()
    assert page.locator(".react-flow__edge").count() == 0
    shot(page, "builder-type-mismatch")
    _connect(page, "read_file", "content", "write_file", "content")  # str -> str: drawn
    page.wait_for_function("document.querySelectorAll('.react-flow__edge').length === 1")
    assert page.locator("[data-refusal]").count() == 0


@pytest.fixture(scope="module")
def llm_pg_head(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """A head with the Playground and the scripted OpenAI-compatible endpoint (no worker: nothing runs)."""
    head = HeadProcess(
        tmp_path_factory.mktemp("pg-llm") / "head",
        extra=[
            "--playground",
            "--no-local-worker",
            "--llm-base-url",
            f"{llm.base_url}/v1",
            "--llm-model",
            "scripted-coder",
        ],
    )
    head.start()
    yield head
    assert head.stop() == 0, head.log()


def test_a_task_generated_from_a_prompt_is_reviewed_in_the_editor_then_saved(
    llm_pg_head: HeadProcess,
    llm: ScriptedLLM,
    page: Any,  # noqa: F811
) -> None:
    page.goto(f"{llm_pg_head.url}/playground/builder")
    _use_workspace(page, "gen")
    page.locator("[data-llm='configured']").wait_for()
    assert "scripted-coder" in page.locator(".generate").inner_text()
    generate = page.get_by_role("button", name="Generate")
    assert generate.is_disabled()  # nothing described yet
    # the endpoint fails: its error is shown with its type, nothing opens
    llm.load(Reply(500, {"error": {"message": "the model is overloaded"}}))
    page.get_by_label("task prompt").fill("Count the words of a text")
    generate.click()
    failed = page.locator(".generate .error-box", has_text="llm_unavailable")
    failed.wait_for()
    assert "502" in failed.inner_text() and "overloaded" in failed.inner_text()
    # it answers: the code opens in the editor for review, and is stored only when saved
    llm.load(completion(f"Here it is:\n\n```python\n{WORD_COUNT}```\n"))
    generate.click()
    page.locator("[data-generated]").wait_for()
    assert "scripted-coder" in page.locator("[data-generated]").inner_text()
    assert page.get_by_label("task file name").input_value() == "word_count.py"
    assert "def word_count" in page.locator(".cm-content").inner_text()
    page.wait_for_selector("[data-editor-tasks] >> text=word_count(text)")
    (asked,) = llm.requests
    assert asked.body["messages"][-1] == {"role": "user", "content": "Count the words of a text"}
    assert httpx.get(f"{llm_pg_head.url}/workspaces/gen/tasks").json() == []  # not stored yet
    shot(page, "builder-generated-task")
    page.get_by_role("button", name="Save task file").click()
    page.locator("[data-block='workspace:word_count.py:word_count']").wait_for()
    (stored,) = httpx.get(f"{llm_pg_head.url}/workspaces/gen/tasks").json()
    assert stored["file"] == "word_count.py" and stored["tasks"][0]["outputs"] == ["words"]
