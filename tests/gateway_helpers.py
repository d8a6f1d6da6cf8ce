"""The gateway as a real server process (``notifier gateway`` on uvicorn), and clients for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from notifier import NotifierConfig, load_config
from notifier.testing import RedisServer, free_port, wait_until

SECRET = "test-gateway-secret-0123456789abcdef"  # 36 characters: no test output may show it
HISTORY = {"enabled": True, "maxlen": 1000, "ttl_seconds": 600}


class GatewayProcess:
    """``python -m notifier.cli gateway`` on a free port; its output kept in a log file."""

    def __init__(
        self,
        redis_url: str,
        workdir: Path,
        *,
        secret: str | None = SECRET,
        gateway_table: str = "",
        history_table: str = "enabled = true\n",
        host: str = "127.0.0.1",
    ) -> None:
        self.port = free_port()
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
                + ["gateway"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._answers, 30)
        except TimeoutError:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gateway exited: {self.log.read_text()}")
        try:
            urllib.request.urlopen(self.url("/tasks/probe/last"), timeout=1).close()
        except urllib.error.HTTPError:
            return True  # it answers (401, 404 ...)
        except OSError:
            return False
        return True

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
