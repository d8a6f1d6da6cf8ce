"""The web examples end to end: examples/fastapi_app.py and examples/flask_app.py under uvicorn,
each beside one real prefork worker of examples/celery_app.py, and a real Chromium that starts
a job on the app's page and follows it to its end through the mounted gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.testing import RedisServer, free_port, wait_until
from tasks.launcher import CHECKOUT

from support.celery import AppWorker
from support.gateway import SECRET

pytestmark = pytest.mark.timeout(120)

ROWS = 20  # what the page's button asks for


class AppServer:
    """``uvicorn <target>`` on a free port, its output in a file; started at once, ready after
    ``wait_ready`` (so that the servers and the worker start side by side)."""

    def __init__(self, target: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", target, "--port", str(self.port)],
                cwd=CHECKOUT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        try:
            wait_until(self._answers, 30)
        except TimeoutError:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {self.output()}")
        try:
            return httpx.get(self.url("/"), timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> int:
        """Stop it as a process manager does (SIGTERM); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def env(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the worker and both apps read: the broker, the notifier's file (history on, so that
    the page gets the run from its start) and the gateway's secret."""
    config = tmp_path_factory.mktemp("web") / "config.toml"
    config.write_text(
        f'[redis]\nurl = "{redis.url}"\nconnect_timeout = 1.0\n[history]\nenabled = true\n'
    )
    return {
        "CELERY_BROKER_URL": redis.url,
        "NOTIFIER_CONFIG": str(config),
        "NOTIFIER_REDIS_URL": redis.url,
        "NOTIFIER_GATEWAY_SECRET": SECRET,
    }


APPS = ("fastapi_app", "flask_app")


@pytest.fixture(scope="module")
def servers(
    redis: RedisServer, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AppServer]]:
    """Both apps under uvicorn, and one prefork worker for both on Celery's default queue,
    where the apps send (this module's Redis is its own: no other worker takes from it). All
    three start side by side."""
    logs = tmp_path_factory.mktemp("web")
    started = {name: AppServer(f"examples.{name}:app", env, logs / f"{name}.log") for name in APPS}
    config = Path(env["NOTIFIER_CONFIG"])
    worker = AppWorker("examples.celery_app", redis, config, env, concurrency=1)
    args = worker.process.args
    args[args.index("--queues") + 1] = worker.process.queue = "celery"
    try:
        with worker:
            for server in started.values():
                server.wait_ready()
            yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(params=APPS)
def server(request: pytest.FixtureRequest, servers: dict[str, AppServer]) -> AppServer:
    return servers[request.param]


def test_a_browser_starts_a_job_and_follows_it_to_its_end(
    server: AppServer, page: Any, redis: RedisServer
) -> None:
    """The page starts a job, then shows its progress and its end, pushed through the gateway
    mounted in the app; the job's token is the visitor's alone; the app drains its notifier
    when it stops."""
    page.goto(server.url("/"))
    page.click("#start")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'completed'", timeout=30_000
    )
    assert "100%" == page.eval_on_selector("#bar", "bar => bar.style.width")
    assert f"{ROWS} of {ROWS}: row {ROWS} of {ROWS}" == page.text_content("#message")
    task_id = page.text_content("#task")
    with redis.client() as r:
        events = [json.loads(e[b"event"]) for _, e in r.xrange(f"task-history:{task_id}")]
    assert {"queued", "started", "progress", "completed"} == {e["type"] for e in events}
    assert "completed" == events[-1]["type"]
    # Another visitor (without the page's cookie) gets no token for it.
    assert 403 == httpx.get(server.url(f"/jobs/{task_id}/token")).status_code

    # On SIGTERM the lifespan drains the notifier that published the job's queued event,
    # awaited; uvicorn then ends by the signal it caught, as a process should.
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.output()
    assert "Application shutdown complete" in log, log
    assert "notifier_closed" in log and "published=1" in log, log
    assert "Traceback" not in log and "Warning" not in log, log
