"""The web examples end to end: examples/fastapi_app.py and examples/flask_app.py under uvicorn,
each beside one real prefork worker of examples/celery_app.py, and a real Chromium that starts
a job on the app's page and follows it to its end through the mounted gateway."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from notifier.testing import RedisServer, free_port, wait_until
from tasks.launcher import CHECKOUT

from support.celery import AppWorker
from support.gateway import SECRET, GatewayProcess

pytestmark = pytest.mark.timeout(120)

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
CHECKOUT_PATH = Path(CHECKOUT)
# Around the recipe: a foreground nginx whose files are all in the test's directory, and an
# access log that names the upstream each request went to.
NGINX_MAIN = """
daemon off;
master_process off;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $upstream_addr $upstream_name {{ default app; "~:{gateway}$" gateway; }}
    log_format upstreams '$upstream_name $request_uri $status';
    access_log {access} upstreams;
{recipe}
}}
"""

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


def follow_a_job(page: Any, url: str, redis: RedisServer) -> str:
    """Open the app's page at ``url``, start a job there, and wait until the page shows its
    end; check what it showed and what the task's history holds. The task id."""
    page.goto(url)
    page.click("#start")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'completed'", timeout=30_000
    )
    assert "100%" == page.eval_on_selector("#bar", "bar => bar.style.width")
    assert f"{ROWS} of {ROWS}: row {ROWS} of {ROWS}" == page.text_content("#message")
    task_id: str = page.text_content("#task")
    with redis.client() as r:
        events = [json.loads(e[b"event"]) for _, e in r.xrange(f"task-history:{task_id}")]
    assert {"queued", "started", "progress", "completed"} == {e["type"] for e in events}
    assert "completed" == events[-1]["type"]
    return task_id


def test_a_browser_starts_a_job_and_follows_it_to_its_end(
    server: AppServer, page: Any, redis: RedisServer
) -> None:
    """The page starts a job, then shows its progress and its end, pushed through the gateway
    mounted in the app; the job's token is the visitor's alone."""
    task_id = follow_a_job(page, server.url("/"), redis)
    # Another visitor (without the page's cookie) gets no token for it.
    assert 403 == httpx.get(server.url(f"/jobs/{task_id}/token")).status_code


@pytest.fixture
def nginx(
    servers: dict[str, AppServer], redis: RedisServer, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """examples/nginx.conf in a real nginx, in front of the Flask example (/) and a
    ``notifier gateway`` (/notifications/); its base URL and its access log."""
    if NGINX is None:
        reason = "no nginx on this machine (apt-get install nginx-light); .ci/run installs it"
        if os.environ.get("NOTIFIER_REQUIRE_NGINX"):  # set by .ci/run: CI must not skip it
            pytest.fail(reason)
        pytest.skip(reason)
    with GatewayProcess(
        redis.url, tmp_path, gateway_table='trusted_proxies = ["127.0.0.1"]\n'
    ) as gateway:
        port = free_port()
        recipe = (CHECKOUT_PATH / "examples" / "nginx.conf").read_text()
        recipe = recipe.replace("127.0.0.1:8000", f"127.0.0.1:{servers['flask_app'].port}")
        recipe = recipe.replace("127.0.0.1:8001", f"127.0.0.1:{gateway.port}")
        recipe = recipe.replace("listen 80;", f"listen 127.0.0.1:{port};")
        assert str(port) in recipe and str(gateway.port) in recipe
        access = tmp_path / "access.log"
        conf = tmp_path / "nginx.conf"
        main = NGINX_MAIN.format(tmp=tmp_path, access=access, recipe=recipe, gateway=gateway.port)
        conf.write_text(main)
        with (tmp_path / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                [NGINX, "-p", str(tmp_path), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(url, process, tmp_path), 15)
            yield url, access
        finally:
            process.terminate()
            process.wait(10)
        gateway.assert_clean_log()


def _answers(url: str, process: subprocess.Popen[bytes], tmp: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"nginx exited: {(tmp / 'stderr.log').read_text()}")
    try:
        return httpx.get(url + "/notifications/client.js", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_behind_nginx_the_page_follows_a_job_over_sse_and_a_websocket_reads_it(
    nginx: tuple[str, Path], page: Any, redis: RedisServer
) -> None:
    """examples/nginx.conf puts the app and a gateway on one origin: the page follows a job
    through nginx to the gateway (SSE, unbuffered), and a WebSocket from the page's origin
    gets the same run through nginx's upgrade."""
    url, access = nginx
    task_id = follow_a_job(page, url + "/", redis)
    token = page.evaluate(f"fetch('/jobs/{task_id}/token').then((r) => r.text())")
    ws_url = url.replace("http", "ws") + f"/notifications/ws/tasks/{task_id}"
    received = []
    origin: Any = url  # websockets types it as its own Origin, a str at run time
    with connect(f"{ws_url}?token={token}", origin=origin) as ws, pytest.raises(ConnectionClosedOK):
        while True:
            received.append(json.loads(ws.recv(timeout=10)))
    assert "completed" == received[-1]["type"]
    assert ROWS == max(e["data"].get("current", 0) for e in received)
    # The stream went to the gateway, not to the app's own mount.
    lines = access.read_text().splitlines()
    events = [line for line in lines if f"/notifications/tasks/{task_id}/events" in line]
    assert events and all(line.startswith("gateway ") for line in events), lines


@pytest.mark.parametrize("name", APPS)
def test_the_app_drains_its_notifier_when_it_stops(
    servers: dict[str, AppServer], name: str
) -> None:
    """On SIGTERM the lifespan drains the notifier that published the jobs' queued events,
    awaited; uvicorn then ends by the signal it caught, as a process should."""
    server = servers[name]
    assert 200 == httpx.post(server.url("/jobs?rows=1")).status_code
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.output()
    assert "Application shutdown complete" in log, log
    closed = re.findall(r"notifier_closed .*published=(\d+)", log)
    assert 1 == len(closed) and int(closed[0]) >= 1, log
    assert "Traceback" not in log and "Warning" not in log, log
