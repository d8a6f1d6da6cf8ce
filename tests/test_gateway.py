"""The example WebSocket gateway, run as a real server process and driven by real clients."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from notifier import Notifier
from notifier.testing import EventCollector, RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
HISTORY = {"enabled": True, "maxlen": 1000, "ttl_seconds": 600}


class Gateway:
    """``python -m examples.gateway`` on a free port, its output kept in a log file."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "gateway.log"
        config = workdir / "config.toml"
        config.write_text('[history]\nenabled = true\nkey_prefix = "task-history:"\n')
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.gateway", "--port", str(self.port)]
                + ["--config", str(config)],
                cwd=ROOT,
                env={**os.environ, "NOTIFIER_REDIS_URL": redis_url},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._answers, 30)
        except TimeoutError:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited: {self.log.read_text()}")
        try:
            with urllib.request.urlopen(self.url("/"), timeout=1) as response:
                return bool(200 == response.status)
        except OSError:
            return False

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def get_json(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def gateway(redis_server: RedisServer, tmp_path: Path) -> Iterator[Gateway]:
    """The gateway against the session's redis-server; stopped, and its log checked, after."""
    server = Gateway(redis_server.url, tmp_path)
    yield server
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log, log  # no request may have failed inside the gateway


def new_task(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def receive_all(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every event until the server closes the socket, and the close code it sent (each recv is
    bounded: a socket that stays open fails the test)."""
    events = []
    try:
        while True:
            events.append(json.loads(ws.recv(timeout=30)))
    except ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd else None


def published(collector: EventCollector, task_id: str, count: int) -> list[dict[str, Any]]:
    wait_until(lambda: count == sum(e["task_id"] == task_id for e in collector.events), 30)
    return [e for e in collector.events if e["task_id"] == task_id]


def subscribers(server: RedisServer, task_id: str) -> int:
    with server.client() as c:
        return int(c.pubsub_numsub(f"task:{task_id}")[0][1])


def test_a_late_client_gets_the_whole_history_then_the_socket_closes(
    gateway: Gateway,
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A client that connects after the task completed receives every event, then a close 1000."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("gw-late")
    for percent in (25, 50, 75):
        assert n.publish_progress(task, percent, message="working")
    assert n.publish_completed(task, result={"rows": 10})
    assert n.flush(10)
    expected = published(collector, task, 4)

    with connect(gateway.url(f"/ws/tasks/{task}", "ws")) as ws:
        received, code = receive_all(ws)
    assert expected == received
    assert 1000 == code


def test_a_connected_client_sees_the_live_events_in_order(
    gateway: Gateway,
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A client connected before the task starts gets its events live, in order, then a close."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("gw-live")
    with connect(gateway.url(f"/ws/tasks/{task}", "ws")) as ws:
        wait_until(lambda: 1 == subscribers(redis_server, task), 30)
        for i in range(50):
            assert n.publish_progress(task, i * 2, message=f"step {i}")
        assert n.publish_failed(task, RuntimeError("disk full"))
        received, code = receive_all(ws)
    assert published(collector, task, 51) == received
    assert 1000 == code
    assert [*range(0, 100, 2), None] == [e["data"].get("progress") for e in received]
    wait_until(lambda: 0 == subscribers(redis_server, task), 30)  # the gateway let go of Redis


def test_a_client_that_leaves_early_frees_its_subscription(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    """Closing the WebSocket while the task is quiet ends the gateway's Redis subscription."""
    task = new_task("gw-leave")
    with connect(gateway.url(f"/ws/tasks/{task}", "ws")):
        wait_until(lambda: 1 == subscribers(redis_server, task), 30)
    wait_until(lambda: 0 == subscribers(redis_server, task), 30)


def test_last_returns_the_latest_event_or_404(
    gateway: Gateway, redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """GET /tasks/{id}/last answers the latest event, 404 for an unknown task, 400 for a bad id."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("gw-last")
    assert n.publish_progress(task, 10)
    assert n.publish_progress(task, 60, message="almost")
    assert n.flush(10)

    status, body = gateway.get_json(f"/tasks/{task}/last")
    assert (200, 60, "almost") == (status, body["data"]["progress"], body["data"]["message"])
    assert 404 == gateway.get_json(f"/tasks/{new_task('gw-none')}/last")[0]
    assert 400 == gateway.get_json("/tasks/two%20words/last")[0]


def test_the_page_and_a_malformed_task_id(gateway: Gateway) -> None:
    """GET / serves the page that opens the socket; a malformed task id is refused at handshake."""
    with urllib.request.urlopen(gateway.url("/"), timeout=10) as response:
        page = response.read().decode()
    assert "text/html; charset=utf-8" == response.headers["content-type"]
    assert "/ws/tasks/" in page
    with pytest.raises(InvalidStatus) as refused:
        connect(gateway.url("/ws/tasks/task-%2A", "ws"))
    assert 403 == refused.value.response.status_code
