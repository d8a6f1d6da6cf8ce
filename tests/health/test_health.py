"""The health endpoint and /metrics: in-process, then against a real Celery prefork worker."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from notifier import Notifier, health
from notifier.health.report import NO_REPORT
from notifier.testing import RedisServer, free_port, wait_until

from support.celery import Harness
from support.faultproxy import FaultProxy
from support.health import (
    DEAD_LOOP_BOUND,
    HEARTBEAT,
    REDIS_BOUND,
    SLACK,
    STALE_AFTER,
    health_config,
    health_report,
    healthy,
    request,
    serving,
)


def reasons_when(base_url: str, status: int, fragment: str) -> Callable[[], list[str] | None]:
    """A condition for wait_until: the report's reasons once the status is ``status`` and
    some reason contains ``fragment``."""

    def check() -> list[str] | None:
        try:
            got, report = health_report(base_url)
        except OSError:
            return None
        reasons: list[str] = report["reasons"]
        if got == status and any(fragment in r for r in reasons):
            return reasons
        return None

    return check


def metric_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, parsed by prometheus_client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_healthy_notifier_serves_200_with_its_pid(redis_server: RedisServer) -> None:
    """A started notifier with health on serves 200 and reports this process and its figures."""
    with serving(health_config(redis_server.url)) as (notifier, server):
        report = wait_until(lambda: healthy(server.url), 10)
        assert "ok" == report["status"]
        assert [] == report["reasons"]
        (process,) = report["processes"]
        assert os.getpid() == process["pid"]
        assert (True, True, None) == (
            process["connected"],
            process["thread_alive"],
            process["last_error"],
        )
        assert notifier.config.queue.maxsize == process["queue_capacity"]
        assert notifier.config.redis.safe_url == process["redis_url"]


def test_no_notifier_yet_is_503(redis_server: RedisServer) -> None:
    """An endpoint with nothing reporting answers 503 with the reason, and metrics agree."""
    server = health.serve(health_config(redis_server.url))
    try:
        status, report = health_report(server.url)
        assert (503, "unhealthy", [NO_REPORT], []) == (
            status,
            report["status"],
            report["reasons"],
            report["processes"],
        )
        _, body, _ = request(server.url + "/metrics")
        values = metric_values(body.decode())
        assert 0.0 == values[("notifier_healthy", frozenset())]
        assert 0.0 == values[("notifier_processes", frozenset())]
    finally:
        server.stop()


def test_redis_down_is_503_with_the_reason_then_200_after_reconnect(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Redis killed: 503 'redis unreachable' within the bound; restarted: 200 again."""
    redis = redis_factory()
    with serving(health_config(redis.url)) as (_, server):
        wait_until(lambda: healthy(server.url), 10)
        redis.kill()
        started = time.monotonic()
        reasons = wait_until(reasons_when(server.url, 503, "redis unreachable: "), REDIS_BOUND)
        assert time.monotonic() - started <= REDIS_BOUND
        assert 1 == len(reasons)
        assert reasons[0].startswith(f"pid {os.getpid()}: redis unreachable: ")
        redis.start()
        report = wait_until(lambda: healthy(server.url), 10)
        assert 1 == report["processes"][0]["reconnects"]


def test_blocked_loop_is_503_within_two_heartbeats_then_200(redis_server: RedisServer) -> None:
    """A callable that blocks the notifier's loop turns the endpoint 503 within two heartbeat
    intervals; released, the endpoint returns to 200."""
    with serving(health_config(redis_server.url)) as (notifier, server):
        wait_until(lambda: healthy(server.url), 10)
        loop = notifier._sender._loop if notifier._sender else None
        assert loop is not None
        release = threading.Event()
        loop.call_soon_threadsafe(release.wait, 30)
        try:
            reasons = wait_until(
                reasons_when(server.url, 503, "notifier thread dead or event loop blocked"),
                DEAD_LOOP_BOUND,
            )
        finally:
            release.set()
        assert 1 == len(reasons)
        wait_until(lambda: healthy(server.url), 10)


def test_dead_notifier_thread_is_503(redis_server: RedisServer) -> None:
    """A notifier thread that stopped while its notifier was never closed: 503, thread dead."""
    with serving(health_config(redis_server.url)) as (notifier, server):
        wait_until(lambda: healthy(server.url), 10)
        assert notifier._sender is not None
        notifier._sender.force_stop()
        wait_until(lambda: not notifier.stats()["thread_alive"], 5)
        wait_until(
            reasons_when(server.url, 503, "notifier thread dead or event loop blocked"),
            DEAD_LOOP_BOUND,
        )
        _, report = health_report(server.url)
        assert [False] == [p["thread_alive"] for p in report["processes"]]


def test_lagging_loop_is_503_until_it_catches_up(redis_server: RedisServer) -> None:
    """A heartbeat that ran later than max_loop_lag makes the endpoint 503 'event loop lagging'."""
    config = health_config(
        redis_server.url,
        health={"heartbeat_interval": 0.5, "stale_after": 5.0, "max_loop_lag": 0.15},
    )
    with serving(config) as (notifier, server):
        wait_until(lambda: healthy(server.url), 10)
        loop = notifier._sender._loop if notifier._sender else None
        assert loop is not None
        # Blocked for less than stale_after: the next heartbeat runs at least 0.7 s late.
        loop.call_soon_threadsafe(time.sleep, 1.2)
        wait_until(reasons_when(server.url, 503, "event loop lagging"), 5)
        wait_until(lambda: healthy(server.url), 10)


def test_closed_notifier_disappears_from_the_report(redis_server: RedisServer) -> None:
    """A notifier closed in a running process is removed from the report, not shown dead."""
    with serving(health_config(redis_server.url)) as (notifier, server):
        wait_until(lambda: healthy(server.url), 10)
        notifier.close()
        wait_until(reasons_when(server.url, 503, NO_REPORT), 3)


def test_collected_notifier_disappears_from_the_report(redis_server: RedisServer) -> None:
    """A notifier that was closed and dropped takes its snapshot with it."""
    config = health_config(redis_server.url)
    notifier = Notifier(config)
    notifier.start()
    server = health.serve(config)
    try:
        wait_until(lambda: healthy(server.url), 10)
        notifier.close()
        del notifier
        gc.collect()
        status, report = health_report(server.url)
        assert (503, [NO_REPORT]) == (status, report["reasons"])
    finally:
        server.stop()


def test_unknown_paths_and_methods_get_clean_answers(redis_server: RedisServer) -> None:
    """404 JSON for unknown paths, 405 with Allow for other methods, 400 for garbage; the
    server keeps serving after each."""
    with serving(health_config(redis_server.url)) as (_, server):
        status, body, _ = request(server.url + "/nope")
        assert (404, "not found") == (status, json.loads(body)["error"])
        for method in ("POST", "PUT", "DELETE", "BREW"):
            status, body, headers = request(server.url + "/health", method, data=b"{}")
            assert (405, "GET, HEAD") == (status, headers["Allow"]), method
            assert "GET, HEAD" == json.loads(body)["allow"]
        status, body, _ = request(server.url + "/health", "HEAD")
        assert status in (200, 503) and b"" == body
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"\x00\x01 not http at all\r\n\r\n")
            assert raw.makefile("rb").readline().startswith(b"HTTP/1.0 400 ")
        wait_until(lambda: healthy(server.url), 10)


def test_no_password_in_health_metrics_or_snapshots(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """With a password in the Redis URL, neither /health, /metrics nor the snapshot files show it,
    also while Redis is down and errors are being reported."""
    password = "hunter2-secret-pw"
    redis = redis_factory(password=password)
    with serving(health_config(redis.url)) as (_, server):
        wait_until(lambda: healthy(server.url), 10)
        redis.kill()
        reasons = wait_until(reasons_when(server.url, 503, "redis unreachable"), REDIS_BOUND)
        bodies = [request(server.url + path)[1] for path in ("/health", "/metrics")]
        bodies += [p.read_bytes() for p in Path(server.directory).iterdir()]
        assert [] == [b for b in bodies if password.encode() in b]
        _, report = health_report(server.url)
        assert "***" in report["processes"][0]["redis_url"]
        assert reasons


def test_metrics_agree_with_health(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """/metrics parsed with prometheus_client's parser carries the figures /health shows."""
    redis = redis_factory()
    config = health_config(
        redis.url, queue={"maxsize": 4, "batch_size": 4}, health={"max_loop_lag": 5.0}
    )
    with serving(config) as (notifier, server):
        wait_until(lambda: healthy(server.url), 10)
        for i in range(3):
            assert notifier.publish("metrics", "tick", {"i": i})
        assert notifier.flush(10)
        redis.kill()  # from here on the counters stand still, except for the drops below
        wait_until(reasons_when(server.url, 503, "redis unreachable"), REDIS_BOUND)
        refused = [notifier.publish("metrics", "tick") for _ in range(10)]
        assert False in refused

        def settled() -> dict[str, Any] | None:
            _, report = health_report(server.url)
            (p,) = report["processes"]
            return p if p["dropped_by_reason"].get("queue_full") == refused.count(False) else None

        process = wait_until(settled, 5)
        _, body, headers = request(server.url + "/metrics")
        assert headers["Content-Type"].startswith("text/plain")
        values = metric_values(body.decode())
        labels = frozenset({("pid", str(process["pid"])), ("notifier", str(process["notifier"]))})
        expected = {
            "notifier_published_total": process["published"],
            "notifier_reconnects_total": process["reconnects"],
            "notifier_queue_depth": process["queue_size"],
            "notifier_queue_capacity": process["queue_capacity"],
            "notifier_redis_connected": 0.0,
            "notifier_process_healthy": 0.0,
            "notifier_last_publish_timestamp_seconds": process["last_publish_at"],
        }
        assert expected == {name: values[(name, labels)] for name in expected}
        assert 3 == process["published"]
        queue_full = labels | {("reason", "queue_full")}
        assert refused.count(False) == values[("notifier_dropped_total", queue_full)]
        assert 0.0 == values[("notifier_healthy", frozenset())]
        assert 1.0 == values[("notifier_processes", frozenset())]
        assert 0 <= values[("notifier_heartbeat_age_seconds", labels)] < STALE_AFTER + SLACK


# Against a real Celery prefork worker -------------------------------------------------------


def worker_children(pid: int) -> set[int]:
    return {child.pid for child in psutil.Process(pid).children()}


def reported_pids(report: dict[str, Any]) -> set[int]:
    return {p["pid"] for p in report["processes"]}


def listeners(pid: int, port: int) -> bool:
    """Whether the process holds a listening socket on ``port``."""
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        for c in psutil.Process(pid).net_connections(kind="inet")
    )


@pytest.mark.timeout(180)
def test_prefork_worker_serves_one_endpoint_covering_every_child(
    redis_factory: Callable[..., RedisServer],
    proxy_factory: Callable[[RedisServer], FaultProxy],
    tmp_path: Path,
) -> None:
    """The worker's parent serves; it reports exactly its two children, follows a SIGKILLed child
    and its replacement, a frozen child, and the notifier's Redis going away and back."""
    redis = redis_factory()
    proxy = proxy_factory(redis)  # the notifiers' way to Redis; the broker stays up throughout
    port = free_port()
    table = (
        f"[health]\nenabled = true\nport = {port}\n"
        f"heartbeat_interval = {HEARTBEAT}\nstale_after = {STALE_AFTER}\n"
    )
    db = f"sqlite:///{tmp_path / 'tasks.db'}"
    with Harness(redis, db, tmp_path, notifier_url=proxy.url, extra_toml=table) as h:
        assert h.worker.process is not None
        parent, base = h.worker.process.pid, f"http://127.0.0.1:{port}"

        def consistent() -> dict[str, Any] | None:
            report = healthy(base)
            children = worker_children(parent)
            if report is None or 2 != len(children) or reported_pids(report) != children:
                return None
            return report

        report = wait_until(consistent, 30)
        assert parent not in reported_pids(report)
        assert listeners(parent, port)
        assert [] == [child for child in worker_children(parent) if listeners(child, port)]

        # A child killed outright: it disappears, its replacement appears.
        victim = min(worker_children(parent))
        os.kill(victim, signal.SIGKILL)

        def replaced() -> dict[str, Any] | None:
            report = consistent()
            return report if report is not None and victim not in reported_pids(report) else None

        wait_until(replaced, 30)
        assert [] == [child for child in worker_children(parent) if listeners(child, port)]
        task_id = h.new_task(["noop"])
        assert "completed" == h.run("start_workflow", task_id)["status"]

        # A child frozen (its notifier loop with it): 503 within two heartbeats, then back.
        frozen = min(worker_children(parent))
        os.kill(frozen, signal.SIGSTOP)
        try:
            reasons = wait_until(
                reasons_when(base, 503, "notifier thread dead or event loop blocked"),
                DEAD_LOOP_BOUND,
            )
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert [f"pid {frozen}"] == [r.split(":")[0] for r in reasons]
        wait_until(consistent, 30)

        # The notifiers' Redis unreachable: 503 for every child within the bound, then 200.
        proxy.refuse()
        started = time.monotonic()
        wait_until(lambda: _all_unreachable(base, worker_children(parent)), REDIS_BOUND)
        assert time.monotonic() - started <= REDIS_BOUND
        proxy.forward()
        report = wait_until(consistent, 30)

        _, body, _ = request(base + "/metrics")
        values = metric_values(body.decode())
        pids = {
            int(dict(labels)["pid"])
            for name, labels in values
            if name == "notifier_redis_connected"
        }
        assert reported_pids(report) == pids
        assert 1.0 == values[("notifier_healthy", frozenset())]


def _all_unreachable(base: str, children: set[int]) -> bool:
    status, report = health_report(base)
    unreachable = {
        p["pid"] for p in report["processes"] if any("redis unreachable" in r for r in p["reasons"])
    }
    return 503 == status and children == unreachable
