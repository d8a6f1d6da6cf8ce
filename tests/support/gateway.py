"""The gateway as a real server process (``notifier gateway`` on uvicorn), and clients for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from httpx_sse import ServerSentEvent, connect_sse

from notifier import NotifierConfig, load_config
from notifier.testing import RedisServer, free_port, wait_until

from support.helpers import answers_http

SECRET = "test-gateway-secret-0123456789abcdef"  # 36 characters: no test output may show it
HISTORY = {"enabled": True, "maxlen": 1000, "ttl_seconds": 600}


class GatewayProcess:
    """``python -m notifier.cli gateway --workers N`` on a free port; its output kept in a log
    file. One worker by default: this process serves. With more, uvicorn's supervisor runs them
    as its children, and ``start`` returns once each of them listens."""

    def __init__(
        self,
        redis_url: str,
        workdir: Path,
        *,
        secret: str | None = SECRET,
        gateway_table: str = "",
        history_table: str = "enabled = true\n",
        host: str = "127.0.0.1",
        workers: int = 1,
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.host = host
        self.log = workdir / f"gateway-{self.port}.log"
        self.config_path = workdir / f"gateway-{self.port}.toml"
        self.config_path.write_text(
            f'[redis]\nurl = "{redis_url}"\nconnect_timeout = 1.0\npublish_timeout = 1.0\n'
            "[reconnect]\ninitial_backoff = 0.01\nmax_backoff = 0.2\n"
            f"[history]\n{history_table}"
            f'[gateway]\nport = {self.port}\nhost = "{host}"\n{gateway_table}'
        )
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFIER_REDIS_URL",)}
        env.pop("NOTIFIER_GATEWAY_SECRET", None)
        if secret is not None:
            env["NOTIFIER_GATEWAY_SECRET"] = secret
        self.env = env
        self.config: NotifierConfig = load_config(self.config_path).with_env(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "notifier.cli", "-v", "--config", str(self.config_path)]
                + ["gateway", "--workers", str(self.workers)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._answers, 30)
            wait_until(lambda: self.workers == len(self.listening_pids()), 30)
        except TimeoutError:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        return answers_http(self.url("/tasks/probe/last"), self.process, self.log, "gateway")

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        """The processes that serve: this one with one worker, else its live worker children
        (multiprocessing's resource tracker, a child too, left out)."""
        if self.process is None:
            return []
        if self.workers == 1:
            return [self.process.pid]
        pids = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue  # died; not yet reaped by the supervisor
                if "--multiprocessing-fork" in child.cmdline():
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        return pids

    def listening_pids(self) -> list[int]:
        """The workers with a socket listening on the gateway's port."""
        return [
            pid
            for pid in self.worker_pids()
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                for c in _connections(pid)
            )
        ]

    def listening_socket(self, pid: int) -> str:
        """The kernel's name (``socket:[inode]``, Linux) of the socket ``pid`` listens on the
        port with: workers that share one socket show the same name."""
        for c in _connections(pid):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == self.port:
                return os.readlink(f"/proc/{pid}/fd/{c.fd}")
        raise LookupError(f"process {pid} does not listen on port {self.port}")

    def worker_serving(self, client_port: int) -> int | None:
        """The worker that holds the connection from ``client_port`` (the client's own port:
        ``client_port(response)``), if one does."""
        for pid in self.worker_pids():
            for c in _connections(pid):
                if (
                    c.status == psutil.CONN_ESTABLISHED
                    and c.laddr.port == self.port
                    and c.raddr
                    and c.raddr.port == client_port
                ):
                    return pid
        return None

    def holding(self, client_ports: set[int]) -> set[int]:
        """Which of ``client_ports`` (clients' own ports) a worker still holds a connection from."""
        return {
            c.raddr.port
            for pid in self.worker_pids()
            for c in _connections(pid)
            if c.status == psutil.CONN_ESTABLISHED
            and c.laddr.port == self.port
            and c.raddr
            and c.raddr.port in client_ports
        }

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            children = psutil.Process(process.pid).children()
        except psutil.NoSuchProcess:
            children = []
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The supervisor stops its workers; one that had to be killed leaves them behind.
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            child.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_clean_log(self) -> None:
        """No traceback in its log, and never a token or the secret."""
        log = self.output()
        assert "Traceback" not in log, log
        assert SECRET not in log
        assert "eyJ" not in log, log  # the start of every JWT

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _connections(pid: int) -> list[Any]:
    try:
        return list(psutil.Process(pid).net_connections("tcp"))
    except psutil.NoSuchProcess:
        return []


def client_port(response: httpx.Response) -> int:
    """The local port of the connection a (streamed) response came on."""
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def sse_events(
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    on_event: Callable[[ServerSentEvent], None] | None = None,
) -> tuple[int, list[ServerSentEvent]]:
    """The response status and every event of an SSE stream, until the server ends it;
    ``on_event`` is called with each as it arrives (for a test to act at that point)."""
    with (
        httpx.Client(timeout=timeout) as client,
        connect_sse(client, "GET", url, headers=headers or {}) as source,
    ):
        status = source.response.status_code
        if status != 200:
            source.response.read()
            return status, []
        events = []
        for event in source.iter_sse():
            events.append(event)
            if on_event is not None:
                on_event(event)
        return status, events


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = httpx.get(url, headers=headers or {}, timeout=10)
    return response.status_code, (response.json() if response.content else None)


def stream_ids(redis: RedisServer, key: str) -> list[str]:
    with redis.client() as client:
        return [entry_id.decode() for entry_id, _ in client.xrange(key)]


def decoded(events: list[ServerSentEvent]) -> list[dict[str, Any]]:
    """The events' JSON, without the retry hint (no data) and resets."""
    return [json.loads(e.data) for e in events if e.data and e.event != "reset"]


def wait_subscribed(redis: RedisServer, channel: str, count: int = 1) -> None:
    def numsub() -> bool:
        with redis.client() as client:
            return int(client.pubsub_numsub(channel)[0][1]) >= count

    wait_until(numsub, 30)
