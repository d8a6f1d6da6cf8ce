"""The gateway's page in a real headless Chromium (Debian's, driven by Playwright): history then
live events, a failure in red, and a gateway restart in mid-task with no gap afterwards."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier import Notifier
from notifier.gateway import issue_token
from notifier.testing import RedisServer, free_port

from support.gateway import HISTORY, GatewayProcess, wait_subscribed

pytestmark = [
    pytest.mark.timeout(120),
    # Playwright's sync API keeps its own event loop running on this thread, so the notifier's
    # blocking flush() warns here; holding Playwright's loop while events go out is harmless.
    pytest.mark.filterwarnings("ignore:.*blocks the running event loop:RuntimeWarning"),
]


@pytest.fixture
def publisher(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url, history=HISTORY)


def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $NOTIFIER_SCREENSHOTS (docs/ was made so), else the test's tmp."""
    return Path(os.environ.get("NOTIFIER_SCREENSHOTS") or tmp_path)


def open_page(page: Any, gateway: GatewayProcess, task: str) -> None:
    token = issue_token(task, config=gateway.config)
    page.goto(gateway.url(f"/?task={task}&token={token}"))


def texts(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#events li").all_inner_texts()]


def test_the_page_shows_the_history_then_live_progress_to_completion(
    page: Any,
    redis_server: RedisServer,
    publisher: Notifier,
    tmp_path: Path,
) -> None:
    """A page opened in mid-task shows what happened so far, follows the live progress, and
    ends at completed with a full bar."""
    task = "browser-ok"
    with GatewayProcess(redis_server.url, tmp_path) as gateway:
        for percent in (10, 20):
            assert publisher.publish_progress(task, percent, message=f"step at {percent}%")
        assert publisher.flush(10)
        open_page(page, gateway, task)
        page.wait_for_function("document.querySelectorAll('#events li').length === 2")
        assert "20.0%" == page.inner_text("#percent")
        assert "open" == page.inner_text("#connection")
        wait_subscribed(redis_server, f"task:{task}")
        for percent in (40, 60, 80):
            assert publisher.publish_progress(task, percent, message=f"step at {percent}%")
        assert publisher.publish_completed(task, result={"rows": 3})
        assert publisher.flush(10)
        page.wait_for_function("document.getElementById('status').textContent === 'completed'")
        assert "100" == page.get_attribute("#bar", "value")
        assert "finished" == page.inner_text("#connection")
        assert 6 == len(texts(page))
        page.screenshot(path=str(shots(tmp_path) / "gateway-page-completed.png"), full_page=True)


def test_a_failure_shows_in_red(
    page: Any, redis_server: RedisServer, publisher: Notifier, tmp_path: Path
) -> None:
    """failed: the status says so in red, with the error text."""
    task = "browser-fail"
    with GatewayProcess(redis_server.url, tmp_path) as gateway:
        assert publisher.publish_progress(task, 30, message="loading")
        assert publisher.publish_failed(task, ConnectionError("the bank did not answer"))
        assert publisher.flush(10)
        open_page(page, gateway, task)
        page.wait_for_function("document.getElementById('status').textContent === 'failed'")
        assert "ConnectionError: the bank did not answer" == page.inner_text("#error")
        red = page.eval_on_selector("#status", "e => getComputedStyle(e).color")
        assert "rgb(179, 38, 30)" == red
        page.screenshot(path=str(shots(tmp_path) / "gateway-page-failed.png"), full_page=True)


def test_the_page_resumes_through_a_gateway_restart_without_a_gap(
    page: Any, redis_server: RedisServer, publisher: Notifier, tmp_path: Path
) -> None:
    """The gateway stops in mid-task and starts again on the same port: the page's EventSource
    reconnects by itself with Last-Event-ID, and every event shows exactly once."""
    task = "browser-restart"
    gateway = GatewayProcess(redis_server.url, tmp_path).start()
    try:
        open_page(page, gateway, task)
        wait_subscribed(redis_server, f"task:{task}")
        for i in range(1, 4):
            assert publisher.publish_progress(task, i * 10, message=f"before {i}")
        assert publisher.flush(10)
        page.wait_for_function("document.querySelectorAll('#events li').length === 3")
        gateway.stop()
        page.wait_for_function("document.getElementById('connection').textContent !== 'open'")
        for i in range(4, 7):  # while no gateway runs: only the history has them
            assert publisher.publish_progress(task, i * 10, message=f"during {i}")
        assert publisher.flush(10)
        gateway.start()
        page.wait_for_function(
            "document.querySelectorAll('#events li').length === 6", timeout=30_000
        )
        wait_subscribed(redis_server, f"task:{task}")
        assert publisher.publish_completed(task, result=None)
        assert publisher.flush(10)
        page.wait_for_function("document.getElementById('status').textContent === 'completed'")
        shown = texts(page)
        assert 7 == len(shown), shown
        messages = [t.split('"message":"')[1].split('"')[0] for t in shown[:6]]
        assert [f"before {i}" for i in (1, 2, 3)] + [f"during {i}" for i in (4, 5, 6)] == messages
    finally:
        gateway.stop()


# The browser client (notifier/gateway/client.js, the npm package in clients/js/) ---------------

# Returns at once: {done}, the promise of what the watch saw, for the test to await later
# (evaluate_handle would wait for a promise returned as such).
WATCH = """([url, options]) => {
    window.seen = [];
    const states = [], progressed = [], ended = [];
    let refreshed = 0;
    const done = (async () => {
        const { watch } = await import(options.client || "/client.js");
        const watcher = watch(url, {
            token: options.staleToken,
            refreshToken: () => { refreshed += 1; return options.token; },
            onConnection: (state) => states.push(state),
            onProgress: (event) => progressed.push(event.data.progress),
            onEnd: (event) => ended.push(event.type),
        });
        for await (const event of watcher) window.seen.push(event);
        return { seen: window.seen, states, refreshed, progressed, ended };
    })();
    return { done };
}"""


def start_watch(
    page: Any, gateway: GatewayProcess, task: str, stale: bool = False, workflow: bool = False
) -> Any:
    """watch() in the page, from the gateway's own origin; the promise of what it saw."""
    page.goto(gateway.url("/client.js"))
    token = issue_token(task, config=gateway.config, workflow=workflow)
    stale_token = token[:-4] + "AAAA" if stale else token  # its signature broken: 401
    options = {"token": token, "staleToken": stale_token}
    path = f"/workflows/{task}/events" if workflow else f"/tasks/{task}/events"
    return page.evaluate_handle(WATCH, [path, options])


def test_the_client_follows_history_and_live_events_of_any_type_to_the_end(
    page: Any, redis_server: RedisServer, publisher: Notifier, tmp_path: Path
) -> None:
    """watch() yields the history, then live events (an application's own type too), and
    ends after the terminal event; a token the gateway refuses (401) is replaced through
    refreshToken()."""
    task = "client-ok"
    with GatewayProcess(redis_server.url, tmp_path) as gateway:
        assert publisher.publish_progress(task, 10, message="early")
        assert publisher.flush(10)
        done = start_watch(page, gateway, task, stale=True)
        page.wait_for_function("window.seen && window.seen.length === 1")
        wait_subscribed(redis_server, f"task:{task}")
        assert publisher.publish(task, "waiting_review", {"reviewer": "ana"})
        assert publisher.publish_progress(task, 90, message="late")
        assert publisher.publish_completed(task, result={"rows": 3})
        assert publisher.flush(10)
        result = page.evaluate("(watching) => watching.done", done)
        assert ["progress", "waiting_review", "progress", "completed"] == [
            e["type"] for e in result["seen"]
        ]
        assert "open" == result["states"][0] and "closed" == result["states"][-1]
        assert 1 == result["refreshed"]


def through_a_restart(
    page: Any,
    done: Any,
    gateway: GatewayProcess,
    redis_server: RedisServer,
    publisher: Notifier,
    task: str,
) -> Any:
    """Three events, the gateway stopped, three more (only the history has them), the gateway
    started again, the terminal event: what the page's watch() saw, once it ended."""
    wait_subscribed(redis_server, f"task:{task}")
    for i in range(1, 4):
        assert publisher.publish_progress(task, i * 10, message=f"before {i}")
    assert publisher.flush(10)
    page.wait_for_function("window.seen.length === 3")
    gateway.stop()
    for i in range(4, 7):  # while no gateway runs: only the history has them
        assert publisher.publish_progress(task, i * 10, message=f"during {i}")
    assert publisher.flush(10)
    gateway.start()
    page.wait_for_function("window.seen.length === 6", timeout=60_000)
    wait_subscribed(redis_server, f"task:{task}")
    assert publisher.publish_completed(task, result=None)
    assert publisher.flush(10)
    return page.evaluate("(watching) => watching.done", done)


def test_the_client_resumes_through_a_gateway_restart_without_a_gap_or_a_repeat(
    page: Any, redis_server: RedisServer, publisher: Notifier, tmp_path: Path
) -> None:
    task = "client-restart"
    gateway = GatewayProcess(redis_server.url, tmp_path).start()
    try:
        done = start_watch(page, gateway, task)
        result = through_a_restart(page, done, gateway, redis_server, publisher, task)
        messages = [e["data"].get("message") for e in result["seen"]]
        expected = [f"before {i}" for i in (1, 2, 3)] + [f"during {i}" for i in (4, 5, 6)]
        assert [*expected, None] == messages
        assert "reconnecting" in result["states"]
        assert 0 == result["refreshed"]
    finally:
        gateway.stop()


@contextlib.contextmanager
def another_site(port: int) -> Iterator[str]:
    """A site of its own on ``port`` (another origin than the gateway's): an empty page at /."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>another site</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # the test's output is for its failures

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_page_on_another_origin_follows_a_task_through_a_gateway_restart(
    page: Any, redis_server: RedisServer, publisher: Notifier, tmp_path: Path
) -> None:
    """A page served from one origin imports watch() from the gateway on another (listed) one
    and sends its token in the Authorization header, so every request is preflighted; it
    follows the task through a gateway restart to its terminal event, every event once."""
    task = "client-cross-origin"
    with another_site(free_port()) as site:
        table = f'allowed_origins = ["{site}"]\n'
        gateway = GatewayProcess(redis_server.url, tmp_path, gateway_table=table).start()
        try:
            page.goto(f"{site}/")
            token = issue_token(task, config=gateway.config)
            options = {"token": token, "staleToken": token, "client": gateway.url("/client.js")}
            done = page.evaluate_handle(WATCH, [gateway.url(f"/tasks/{task}/events"), options])
            result = through_a_restart(page, done, gateway, redis_server, publisher, task)
        finally:
            gateway.stop()
    messages = [e["data"].get("message") for e in result["seen"]]
    expected = [f"before {i}" for i in (1, 2, 3)] + [f"during {i}" for i in (4, 5, 6)]
    assert [*expected, None] == messages
    assert "reconnecting" in result["states"]
    assert ["completed"] == result["ended"]


def test_the_client_follows_a_workflow_to_its_end(
    page: Any, redis_server: RedisServer, publisher: Notifier, tmp_path: Path
) -> None:
    """A workflow's URL: onProgress gets each member event with the workflow's progress, onEnd
    its one terminal event, and the watch closes after it."""
    from notifier.events import encode_event
    from notifier.workflows.steps import declaration, member_step

    workflow, members = "client-workflow", ["client-wf-a", "client-wf-b"]
    with GatewayProcess(redis_server.url, tmp_path) as gateway:
        done = start_watch(page, gateway, workflow, workflow=True)
        wait_subscribed(redis_server, f"task:workflow:{workflow}")
        assert publisher.integration.publish_step(
            declaration(workflow, branch=members[0], size=2, seal=1)
        )
        for task in members:
            payload = encode_event(task, "completed", {"result": None}, 1 << 20)
            assert publisher.integration.publish_step(
                member_step(workflow, task, "completed", payload)
            )
        assert publisher.flush(10)
        result = page.evaluate("(watching) => watching.done", done)
        assert ["member", "member", "completed"] == [e["type"] for e in result["seen"]]
        assert [50, 100] == result["progressed"]
        assert ["completed"] == result["ended"]


def test_no_test_server_gets_a_port_the_browser_refuses() -> None:
    """Chromium refuses 10080 (net::ERR_UNSAFE_PORT), which lies in the tests' port ranges: a
    gateway given it could not be reached by the page. free_port skips such ports."""
    import subprocess
    import sys

    drawn = subprocess.run(
        [sys.executable, "-c", "from notifier.testing import free_port\n"
         "print(sorted({free_port() for _ in range(12)}))"],
        env={**os.environ, "NOTIFIER_TEST_PORTS": "10078-10082"},
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert drawn.strip() == "[10078, 10079, 10081, 10082]"
