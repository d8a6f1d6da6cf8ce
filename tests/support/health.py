"""Helpers for the health endpoint tests: plain HTTP requests and a notifier that serves health."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from notifier import Notifier, NotifierConfig, health
from notifier.health.server import HealthServer

from support.helpers import make_config

HEARTBEAT = 0.2
STALE_AFTER = 2 * HEARTBEAT  # the documented ceiling: a dead loop shows within two heartbeats
# Extra time for a loaded two-core machine on top of every bound the tests state.
SLACK = 2.0
# Redis lost: the idle notifier's next PING fails (within a heartbeat), the next heartbeat writes.
REDIS_BOUND = STALE_AFTER + HEARTBEAT + SLACK
# A blocked loop or dead thread: its snapshot goes stale within two heartbeats.
DEAD_LOOP_BOUND = 2 * HEARTBEAT + SLACK
FAST_HEALTH: dict[str, Any] = {
    "enabled": True,
    "port": 0,
    "heartbeat_interval": HEARTBEAT,
    "stale_after": STALE_AFTER,
    "max_loop_lag": 0.5,
}


def request(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes, Any]:
    """Status, body and headers of one request; error statuses are answers, not exceptions."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return int(response.status), response.read(), response.headers
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), exc.headers


def health_report(base_url: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = request(base_url + "/health")
    report: dict[str, Any] = json.loads(body)
    return status, report


def healthy(base_url: str) -> dict[str, Any] | None:
    """The report when the endpoint answers 200; None otherwise, or while nothing listens."""
    try:
        status, report = health_report(base_url)
    except OSError:  # URLError included: not serving yet
        return None
    return report if status == 200 else None


def health_config(redis_url: str, **tables: dict[str, Any]) -> NotifierConfig:
    """make_config() with health on, quick heartbeats and any free port; overrides per table."""
    health_table = {**FAST_HEALTH, **tables.pop("health", {})}
    return make_config(redis_url, health=health_table, **tables)


@contextmanager
def serving(config: NotifierConfig) -> Iterator[tuple[Notifier, HealthServer]]:
    """A started notifier with health on and the endpoint serving it; the notifier is closed
    and the endpoint stopped afterwards, so that tests do not share it."""
    notifier = Notifier(config)
    server: HealthServer | None = None
    try:
        notifier.start()
        server = health.serve(config)  # idempotent: the one start() began
        yield notifier, server
    finally:
        notifier.close(timeout=0.5)
        if server is not None:
            server.stop()
