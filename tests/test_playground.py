"""The Playground in a real browser: Debian's chromium driven by Playwright (never a browser
download) against a real head started with `--playground`, its local worker running real runs.

Without chromium these tests skip, saying so, unless MAZE_REQUIRE_BROWSER=1 (CI sets it where it
installed chromium), where they fail. Each main view is saved as a screenshot under
.playground-shots/ (ignored by git) for a reviewer to look at."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, wait_until

SHOTS = Path(__file__).resolve().parent.parent / ".playground-shots"
TIMEOUT_MS = 30_000


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    reason = ""
    if not found:
        reason = "chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("MAZE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert found
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def pg_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    head = HeadProcess(tmp_path_factory.mktemp("pg") / "head", extra=["--playground", "--cpus", "4"])
    head.start()
    yield head
    assert head.stop() == 0, head.log()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors  # no uncaught error in the app


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


@task
def alpha_step(n: int = 0):
    print(f"alpha says {n}")
    return {"n": n + 1}


@task
def beta_breaks(n: int = 0):
    raise ZeroDivisionError(f"beta cannot divide {n}")


@task
def gated(gate: str = "", n: int = 0):
    import os
    import time

    print("waiting at the gate")
    while not os.path.exists(gate):
        time.sleep(0.05)
    return {"n": n + 1}


@task
def lingers(n: int = 0):
    import time

    time.sleep(120)
    return {"n": n}


def _wait_state(client: MaClient, run_id: str, *states: str) -> None:
    wait_until(lambda: client.get_run(run_id)["state"] in states, timeout=60)


def _node(page: Any, name: str) -> Any:
    return page.locator(f".react-flow__node[aria-label^='{name}:']")


# ---- serving (no browser needed) ----------------------------------------------------------------
def test_the_head_serves_the_bundle_with_spa_fallback_and_cache_headers(pg_head: HeadProcess) -> None:
    root = httpx.get(f"{pg_head.url}/", follow_redirects=False)
    assert root.status_code == 302 and root.headers["location"] == "/playground/"
    page = httpx.get(f"{pg_head.url}/playground/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache" and '<div id="root">' in page.text
    asset = page.text.split('src="')[1].split('"')[0]
    assert asset.startswith("/playground/assets/") and asset.endswith(".js")
    js = httpx.get(pg_head.url + asset)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "immutable" in js.headers["cache-control"]
    # a page of the app is the app; a missing asset is a 404 (never the page)
    assert httpx.get(f"{pg_head.url}/playground/runs/run_nope").text == page.text
    missing = httpx.get(f"{pg_head.url}/playground/assets/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert httpx.get(f"{pg_head.url}/playground/../schema/openapi.json").status_code in (200, 404)


def test_without_the_flag_there_is_no_playground(head: HeadProcess) -> None:
    assert httpx.get(f"{head.url}/playground/").status_code == 404
    assert httpx.get(f"{head.url}/").status_code == 404


# ---- in the browser ---------------------------------------------------------------------------
def test_the_console_lists_runs_live_and_filters_them(pg_head: HeadProcess, page: Any) -> None:
    client = MaClient(pg_head.url)
    page.goto(f"{pg_head.url}/playground/")
    page.wait_for_selector("[data-stream='live']")
    # started after the page is open: the list shows them without a reload
    wf = client.create_workflow()
    wf.add_task(alpha_step, inputs={"n": 1})
    ok = wf.run()
    wf = client.create_workflow()
    wf.add_task(beta_breaks, inputs={"n": 1})
    bad = wf.run()
    _wait_state(client, ok, "succeeded")
    _wait_state(client, bad, "failed")
    page.wait_for_selector(f"tr[data-run='{ok}'][data-state='succeeded']")
    page.wait_for_selector(f"tr[data-run='{bad}'][data-state='failed']")
    shot(page, "runs-console")
    page.get_by_label("search").fill("beta_breaks")
    page.wait_for_selector(f"tr[data-run='{ok}']", state="detached")
    assert page.locator(f"tr[data-run='{bad}']").count() == 1
    page.get_by_label("search").fill("")
    page.wait_for_selector(f"tr[data-run='{ok}']")
    page.get_by_label("status").select_option("succeeded")
    page.wait_for_selector(f"tr[data-run='{bad}']", state="detached")
    assert page.locator(f"tr[data-run='{ok}']").count() == 1
    assert "state=succeeded" in page.url  # filters live in the URL: a link shows the same list
    page.get_by_label("kind").select_option("react")
    page.wait_for_selector("td.empty")


def test_a_run_page_turns_green_live_and_shows_logs_and_errors(
    pg_head: HeadProcess, page: Any, tmp_path: Path
) -> None:
    client = MaClient(pg_head.url)
    gate = tmp_path / "gate"
    wf = client.create_workflow()
    first = wf.add_task(gated, inputs={"gate": str(gate), "n": 1})
    second = wf.add_task(alpha_step, inputs={"n": first.outputs["n"]})
    wf.add_task(alpha_step, inputs={"n": second.outputs["n"]})
    run_id = wf.run()
    page.goto(f"{pg_head.url}/playground/runs/{run_id}")
    wait_until(lambda: client.get_run(run_id)["progress"].get("running", 0) == 1, timeout=30)
    page.wait_for_selector(".react-flow__node[aria-label='gated: running']")
    assert _node(page, "alpha_step").count() == 2
    page.locator(".react-flow__node[aria-label='gated: running']").click()
    page.locator(".task-panel h3 >> text=gated").wait_for()
    _node(page, "alpha_step").first.click()  # reads gated's output: named, not a raw reference
    page.wait_for_selector(".task-panel .json >> text=← gated.n")
    page.locator(".react-flow__node[aria-label='gated: running']").click()
    page.locator(".task-panel h3 >> text=gated").wait_for()
    page.get_by_role("button", name="logs").click()
    page.wait_for_selector("[data-logs] >> text=waiting at the gate")
    shot(page, "run-page-running")
    gate.touch()  # the run goes on: no reload, the stream moves the DAG
    page.wait_for_selector("[data-count='succeeded'] >> text=succeeded 3")
    assert page.locator(".react-flow__node[aria-label$=': succeeded']").count() == 3
    page.wait_for_selector(".page-head .badge[data-state='succeeded']")
    # a small DAG has no minimap until asked; it is then drawn in the state colours, top right
    assert page.locator(".react-flow__minimap").count() == 0
    page.get_by_label("toggle minimap").click()
    minimap = page.locator(".react-flow__minimap")
    minimap.wait_for()
    assert "top" in minimap.get_attribute("class")
    fills = page.eval_on_selector_all(
        ".react-flow__minimap-node", "ns => ns.map(n => n.getAttribute('fill') ?? n.style.fill)"
    )
    assert fills == ["rgb(31, 157, 85)"] * 3, fills  # succeeded green (#1f9d55)
    shot(page, "run-page-succeeded")

    # a failed task shows its structured error with the traceback
    wf = client.create_workflow()
    wf.add_task(beta_breaks, inputs={"n": 7})
    failed = wf.run()
    _wait_state(client, failed, "failed")
    page.goto(f"{pg_head.url}/playground/runs/{failed}")
    page.locator(".react-flow__node[aria-label='beta_breaks: failed']").click()
    error = page.locator(".task-error[data-error-type='user_code']")
    error.wait_for()
    assert "ZeroDivisionError" in error.inner_text() and "beta cannot divide 7" in error.inner_text()
    assert error.locator(".error-line").inner_text().count("ZeroDivisionError") == 1  # not "X: X:"
    assert "Traceback" in page.locator(".traceback").inner_text()
    # the traceback and the attempts table scroll inside the panel, never past its edge
    panel = page.locator(".task-panel").bounding_box()
    for part in (".traceback", ".table-scroll"):
        box = page.locator(part).bounding_box()
        assert box["x"] + box["width"] <= panel["x"] + panel["width"], part
    shot(page, "run-page-failed-task")
    # in history, before the task failed, the run's error banner is not shown
    assert page.locator(".run-error").count() == 1
    page.get_by_label("time travel").fill("1")
    page.wait_for_selector(".page-head .badge[data-state='created']")
    assert page.locator(".run-error").count() == 0


@task
def shard(i: int = 0):
    if i == 350:
        raise RuntimeError(f"shard {i} is corrupt")
    return {"i": i}


def test_the_one_failed_task_of_a_big_run_is_one_click_away(pg_head: HeadProcess, page: Any) -> None:
    client = MaClient(pg_head.url)
    wf = client.create_workflow()
    for i in range(400):  # above the DAG's big-graph threshold, no edges at all
        wf.add_task(shard, inputs={"i": i}, task_name=f"shard_{i}")
    run_id = wf.run()
    _wait_state(client, run_id, "failed")
    failed_id = client.get_run(run_id)["failed_task_id"]
    assert failed_id
    page.goto(f"{pg_head.url}/playground/runs/{run_id}")
    page.wait_for_selector("[data-count='failed'] >> text=failed 1")
    # the DAG wraps independent tasks into a grid: the failed one is drawn in the fitted view
    node = page.locator(".react-flow__node[aria-label='shard_350: failed']")
    node.wait_for()
    box, dag = node.bounding_box(), page.locator(".dag").bounding_box()
    assert dag["x"] <= box["x"] and box["x"] + box["width"] <= dag["x"] + dag["width"]
    assert dag["y"] <= box["y"] and box["y"] + box["height"] <= dag["y"] + dag["height"]
    # the timeline lists it first
    assert page.locator(".tl-row .tl-name").first.inner_text() == "shard_350"
    # the run's error banner names it, and opens it
    link = page.locator(f".run-error [data-failed-task='{failed_id}']")
    assert link.inner_text() == "shard_350"
    link.click()
    page.locator(f"[data-task-panel='{failed_id}'] .task-error").wait_for()
    assert "shard 350 is corrupt" in page.locator(".task-error").inner_text()
    page.goto(f"{pg_head.url}/playground/runs/{run_id}")
    # the state chip lists the tasks in that state and selects the first
    page.locator("[data-count='failed']").click()
    items = page.locator("[data-state-tasks='failed'] [data-task-item]")
    items.first.wait_for()
    assert items.count() == 1 and items.first.inner_text() == "shard_350"
    page.locator(f"[data-task-panel='{failed_id}'] .task-error").wait_for()
    shot(page, "big-run-failed-task")
    page.locator("[data-count='succeeded']").click()  # another state: its list, its first task
    page.locator("[data-state-tasks='succeeded'] [data-task-item]").first.wait_for()
    assert page.locator("[data-state-tasks='failed']").count() == 0


@task
def decide_slowly(prompt: str, history: list, tools: dict, step: int):
    import time

    time.sleep(0.6)
    if len(history) < 3:
        return {"action": {"tool": "count_up", "args": {"n": len(history)}}}
    return {"action": {"final": "counted to three"}}


@task
def count_up(n: int = 0):
    import time

    time.sleep(0.3)
    return {"value": n + 1}


def test_a_live_react_run_keeps_its_trace_and_dag_current(pg_head: HeadProcess, page: Any) -> None:
    client = MaClient(pg_head.url)
    react = client.create_react_workflow(llm_task=decide_slowly, tools=[count_up], max_steps=6)
    run_id = react.run_async("count to three")
    page.goto(f"{pg_head.url}/playground/runs/{run_id}")
    page.get_by_role("button", name="Agent trace").click()
    page.locator(".trace").wait_for()
    _wait_state(client, run_id, "succeeded")
    # watched live, never reopened: the trace catches up with the run's end
    page.locator(".trace .final >> text=counted to three").wait_for(timeout=10_000)
    assert page.locator(".trace .trace-step").count() == 4
    shot(page, "react-live-trace")
    # the tasks it appended as it went are all in view: the DAG was fitted again as it grew
    nodes = page.locator(".react-flow__node")
    wait_until(lambda: nodes.count() == 7, timeout=10)  # 4 decisions, 3 tool calls
    dag = page.locator(".dag").bounding_box()
    page.wait_for_timeout(300)  # the last fit is one frame after the last render
    for i in range(nodes.count()):
        box = nodes.nth(i).bounding_box()
        assert dag["x"] <= box["x"] and box["x"] + box["width"] <= dag["x"] + dag["width"] + 1, i
        assert dag["y"] <= box["y"] and box["y"] + box["height"] <= dag["y"] + dag["height"] + 1, i

    # but once the person zooms, the view is theirs: new tasks do not move it
    run_id = react.run_async("count again")
    page.goto(f"{pg_head.url}/playground/runs/{run_id}")
    page.locator(".react-flow__node").first.wait_for()
    page.wait_for_timeout(300)
    page.mouse.move(dag["x"] + dag["width"] / 2, dag["y"] + dag["height"] / 2)
    page.mouse.wheel(0, 200)
    page.wait_for_timeout(300)
    viewport = page.locator(".react-flow__viewport")
    zoomed = viewport.get_attribute("style")
    assert client.get_run(run_id)["state"] == "running"  # still to grow
    _wait_state(client, run_id, "succeeded")
    wait_until(lambda: nodes.count() == 7, timeout=10)
    page.wait_for_timeout(300)
    assert viewport.get_attribute("style") == zoomed


def test_cancel_from_the_run_page(pg_head: HeadProcess, page: Any) -> None:
    client = MaClient(pg_head.url)
    wf = client.create_workflow()
    wf.add_task(lingers, inputs={"n": 1})
    run_id = wf.run()
    page.goto(f"{pg_head.url}/playground/runs/{run_id}")
    page.wait_for_selector(".react-flow__node[aria-label='lingers: running']")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.wait_for_selector(".react-flow__node[aria-label='lingers: cancelled']")
    page.wait_for_selector(".page-head .badge[data-state='cancelled']")
    _wait_state(client, run_id, "cancelled")  # the read models follow the log a little later
    assert page.get_by_role("button", name="Cancel", exact=True).is_disabled()


def test_the_time_travel_slider_shows_earlier_states(pg_head: HeadProcess, page: Any) -> None:
    client = MaClient(pg_head.url)
    wf = client.create_workflow()
    first = wf.add_task(alpha_step, inputs={"n": 1})
    wf.add_task(alpha_step, inputs={"n": first.outputs["n"]})
    run_id = wf.run()
    _wait_state(client, run_id, "succeeded")
    page.goto(f"{pg_head.url}/playground/runs/{run_id}")
    page.wait_for_selector("[data-count='succeeded'] >> text=succeeded 2")
    slider = page.get_by_label("time travel")
    total = int(slider.get_attribute("max"))
    assert total >= 6  # created, 2 x (placed, started, succeeded), finished
    # (the second task is placed with the first, as its follower: maze/head/followers.py)
    slider.fill("1")  # after run.created only: nothing placed yet
    page.wait_for_selector("[data-count='pending'] >> text=pending 2")
    assert page.locator(".react-flow__node[aria-label$=': pending']").count() == 2
    assert "history" in page.locator(".tt-label").inner_text()
    assert page.locator(".page-head .badge").get_attribute("data-state") == "created"  # the header too
    slider.fill("2")  # the first task placed
    page.wait_for_selector(".react-flow__node[aria-label$=': queued']")
    page.wait_for_selector(".page-head .badge[data-state='running']")
    slider.fill("3")  # its follower placed with it
    page.wait_for_selector("[data-count='queued'] >> text=queued 2")
    slider.fill("4")  # the first task started: its running bar ends at this event, not at "now"
    page.wait_for_selector(".react-flow__node[aria-label$=': running']")
    bar = page.locator(".tl-row", has_text="alpha_step").locator(".tl-seg.tl-running").first
    track = page.locator(".tl-row", has_text="alpha_step").locator(".tl-track").first
    bar_box, track_box = bar.bounding_box(), track.bounding_box()
    assert bar_box["x"] + bar_box["width"] < track_box["x"] + track_box["width"] - 3
    shot(page, "time-travel")
    page.get_by_role("button", name="Back to live").click()
    page.wait_for_selector("[data-count='succeeded'] >> text=succeeded 2")
    page.wait_for_selector(".page-head .badge[data-state='succeeded']")


def test_the_cluster_view_shows_the_workers_bars_and_running_attempts(
    pg_head: HeadProcess, page: Any
) -> None:
    client = MaClient(pg_head.url)
    node_id = httpx.get(f"{pg_head.url}/cluster/resources").json()["nodes"][0]["node_id"]
    page.goto(f"{pg_head.url}/playground/cluster")
    card = page.locator(f"[data-node='{node_id}']")
    card.wait_for()
    assert "/ 4 CPUs" in card.locator("[data-usage='CPU']").inner_text()
    assert "MB" in card.locator("[data-usage='Memory']").inner_text()
    wf = client.create_workflow()
    wf.add_task(lingers, inputs={"n": 1})
    run_id = wf.run()
    # live: the attempt and the CPU it holds appear without a reload
    card.locator("text=1 / 4 CPUs").wait_for()
    card.locator(".attempt-list >> text=running").wait_for()
    assert card.locator(".attempt-list a").first.inner_text() == "lingers"  # named, not a task id
    # more than the node holds: the bar is what runs (never "6 / 4"), the rest is queued apart
    wf = client.create_workflow()
    for i in range(5):
        wf.add_task(lingers, inputs={"n": i})
    crowd = wf.run()
    card.locator("text=4 / 4 CPUs").wait_for()
    queued = card.locator("[data-queued-here]")
    wait_until(lambda: "queued here, needing 2 CPUs" in queued.inner_text(), timeout=30)
    assert queued.get_attribute("data-queued-here") == "2"
    shot(page, "cluster")
    for rid in (run_id, crowd):
        httpx.post(f"{pg_head.url}/runs/{rid}/cancel", json={}).raise_for_status()
    card.locator("text=0 / 4 CPUs").wait_for()
    card.locator("text=nothing queued here").wait_for()


def test_a_bounded_stream_is_renewed_without_showing_reconnecting(pg_head: HeadProcess, page: Any) -> None:
    # the page asks for 60 s streams; made 1 s here (the real head ends them with `event: end`)
    renewals: list[str] = []

    def shorter(route: Any) -> None:
        renewals.append(route.request.url)
        route.continue_(url=route.request.url.replace("hold_s=60", "hold_s=1"))

    page.route("**/cluster/stream?hold_s=60", shorter)
    page.goto(f"{pg_head.url}/playground/cluster")
    page.wait_for_selector("[data-stream='live']")
    page.evaluate(
        """() => {
          window.seen = [];
          const el = document.querySelector('[data-stream]');
          new MutationObserver(() => window.seen.push(el.dataset.stream))
            .observe(el, { attributes: true, attributeFilter: ['data-stream'] });
        }"""
    )
    for _ in range(300):  # three clean ends, each renewed (the route runs while Playwright waits)
        if len(renewals) >= 4:
            break
        page.wait_for_timeout(100)
    assert len(renewals) >= 4, renewals
    assert page.evaluate("window.seen") == []  # never left "live"
    assert page.locator("[data-stream]").get_attribute("data-stream") == "live"


def test_a_page_that_fails_to_render_shows_the_error_not_a_blank_app(pg_head: HeadProcess, page: Any) -> None:
    # an answer of a shape the page does not expect (a node with no CPU figures) makes it throw
    page.route(
        "**/cluster/stream?*",
        lambda route: route.fulfill(
            status=200,
            headers={"content-type": "text/event-stream"},
            body='event: cluster\ndata: {"resources": {"nodes": [{"node_id": "odd"}]}}\n\n',
        ),
    )
    page.goto(f"{pg_head.url}/playground/cluster")
    crash = page.locator("[data-crash]")
    crash.wait_for()
    assert "TypeError" in crash.inner_text()
    assert page.get_by_role("button", name="Reload").is_visible()
    shot(page, "page-crash")
    page.get_by_role("link", name="Runs").click()  # the app is still there: another page opens
    page.wait_for_selector("[data-stream='live']")
    assert page.locator("[data-crash]").count() == 0


def test_a_head_that_requires_a_token_asks_for_it_once(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # bound beyond loopback: the head makes its token and requires it (maze/api/auth.py)
    head = HeadProcess(
        tmp_path_factory.mktemp("pg-token") / "head", extra=["--playground", "--host", "0.0.0.0"]
    )
    try:
        head.start()
        token = (head.data_dir / "api-token").read_text().strip()
        assert httpx.get(f"{head.url}/runs").status_code == 401  # the API is not opened
        assert httpx.get(f"{head.url}/schema/openapi.json").status_code == 401
        assert httpx.get(f"{head.url}/playground/").status_code == 200  # the app's files hold no data
        assert httpx.get(f"{head.url}/playground/runs/run_x").status_code == 200  # an app page
        # API routes under the same prefix are not opened with it
        for path in ("/playground/llm", "/playground/catalog"):
            assert httpx.get(f"{head.url}{path}").status_code == 401, path
        assert httpx.post(f"{head.url}/playground/tasks/parse", content=b"x").status_code == 401
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{head.url}/playground/")
        page.get_by_label("API token").wait_for()
        shot(page, "token-prompt")
        assert page.locator("[data-token-refused]").count() == 0  # none was sent yet
        assert "public address" not in page.locator(".modal").inner_text()  # not known to the app
        page.get_by_label("API token").fill("not-the-token")
        page.get_by_role("button", name="Use token").click()
        page.locator("[data-token-refused]").wait_for()  # asked again, saying why
        assert "refused" in page.locator(".modal").inner_text()
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Use token").click()
        page.wait_for_selector("[data-stream='live']")  # the changes stream, with the token in its header
        assert page.locator("td.empty").count() == 1  # the (empty) list answered
        assert page.get_by_label("API token").count() == 0
        assert page.evaluate("localStorage.getItem('maze.token')") == token
        page.goto(f"{head.url}/playground/cluster")  # asked once: the next page has it
        page.locator(".node-card").first.wait_for()
        context.close()
    finally:
        assert head.stop() == 0, head.log()


# ---- the live streams the Playground reads (no browser needed) --------------------------------
def _sse(url: str, headers: dict[str, str] | None = None) -> list[tuple[str, str, str | None]]:
    """Every event of a bounded stream: (event, data, id)."""
    body = httpx.get(url, headers=headers or {}, timeout=30).text
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
        if fields:
            events.append((fields["event"], fields["data"], fields.get("id")))
    return events


def test_run_changes_name_the_runs_that_changed_and_what_was_missed(pg_head: HeadProcess) -> None:
    import json
    import threading

    client = MaClient(pg_head.url)
    got: list[tuple[str, str, str | None]] = []
    reader = threading.Thread(target=lambda: got.extend(_sse(f"{pg_head.url}/runs/changes?hold_s=4")))
    reader.start()
    time.sleep(1.0)
    wf = client.create_workflow()
    wf.add_task(alpha_step, inputs={"n": 1})
    run_id = wf.run()
    reader.join(30)
    assert got[0][0] == "changes" and json.loads(got[0][1])["runs"] == {}  # at once, with the position
    assert got[-1][0] == "end"
    changed = [json.loads(data) for event, data, _ in got if event == "changes"]
    assert any(run_id in c["runs"] for c in changed), got
    last = changed[-1]["seq"]
    # reconnecting: what changed since the last id is said at once (read the list again)
    first = json.loads(_sse(f"{pg_head.url}/runs/changes?hold_s=1", {"Last-Event-ID": str(last - 1)})[0][1])
    assert first["overflow"] is True
    first = json.loads(_sse(f"{pg_head.url}/runs/changes?hold_s=1", {"Last-Event-ID": str(10**9)})[0][1])
    assert first["overflow"] is False
    bad = httpx.get(f"{pg_head.url}/runs/changes?hold_s=0")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "validation_error"


def test_the_cluster_stream_sends_resources_and_queues(pg_head: HeadProcess) -> None:
    import json

    events = _sse(f"{pg_head.url}/cluster/stream?hold_s=1")
    assert events[0][0] == "cluster" and events[-1][0] == "end"
    snapshot = json.loads(events[0][1])
    assert snapshot["resources"]["nodes"][0]["cpu"]["total"] == 4.0
    assert "retry_waits" in snapshot["queues"] and "pending" in snapshot["queues"]
