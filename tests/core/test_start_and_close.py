"""Start, flush, close, accounting and logging: every accepted event is published or counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

import notifier as default
from notifier import Notifier, NotifierError
from notifier.publisher import FORCE_STOP_GRACE
from notifier.testing import EventCollector, RedisServer, free_port, wait_until

from support.helpers import assert_invariant, make_config


def unreachable_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: connection refused


def notifier_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "notifier"]


def test_nothing_starts_before_start_or_first_publish(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """Creating a notifier starts no thread; the first publish starts one named 'notifier'."""
    before = len(notifier_threads())
    n = notifier_factory(redis_server.url)
    assert before == len(notifier_threads())
    assert n.publish_progress("t", 1)
    thread = n._thread
    assert thread is not None and thread.daemon and "notifier" == thread.name
    assert before + 1 == len(notifier_threads())
    n.start()  # idempotent
    assert thread is n._thread


def test_context_manager_starts_and_drains(
    redis_server: RedisServer, collector: EventCollector
) -> None:
    """`with Notifier(cfg)` starts it and, on exit, delivers everything before stopping."""
    with Notifier(make_config(redis_server.url)) as n:
        assert n.stats()["thread_alive"]
        for i in range(5000):
            n.publish_progress("ctx", i)
    stats = n.stats()
    assert 5000 == stats["published"]
    assert 0 == stats["pending"]
    assert not stats["thread_alive"]
    collector.wait_for(5000)


def test_close_is_idempotent_and_later_publishes_are_counted(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """After close, publish returns False and counts a 'closed' drop; start() refuses."""
    n = notifier_factory(redis_server.url)
    assert n.publish_progress("t", 1)
    n.close()
    n.close()
    assert n.publish_progress("t", 2) is False
    assert n.publish_failed("t", "late") is False
    stats = n.stats()
    assert {"closed": 2} == stats["dropped_by_reason"]
    assert (1, 2, 2) == (stats["published"], stats["dropped"], stats["rejected"])
    assert_invariant(stats)
    with pytest.raises(NotifierError, match="closed"):
        n.start()


def test_close_of_never_started_notifier_is_instant() -> None:
    """close() on a notifier that never started does nothing and starts nothing."""
    n = Notifier(make_config(unreachable_url()))
    n.close()
    assert n.publish("t", "x") is False
    assert {"closed": 1} == n.stats()["dropped_by_reason"]


def test_close_with_redis_unreachable_meets_its_deadline_and_counts_shutdown_drops(
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Undeliverable events are counted as 'shutdown' drops and logged with their count."""
    n = notifier_factory(unreachable_url())
    for i in range(100):
        assert n.publish_progress("t", i)
    with capture_logs() as logs:
        started = time.monotonic()
        n.close(timeout=0.5)
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.5 + FORCE_STOP_GRACE + 1.0  # the deadline, plus scheduling slack
    stats = n.stats()
    assert {"shutdown": 100} == stats["dropped_by_reason"]
    assert (0, 0, 100) == (stats["published"], stats["pending"], stats["dropped"])
    assert_invariant(stats)
    dropped = [e for e in logs if e["event"] == "notification_dropped"]
    assert [("shutdown", 100)] == [(e["reason"], e["count"]) for e in dropped]


def test_flush(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> None:
    """flush() is True with nothing pending, True once delivered, False while undeliverable."""
    n = notifier_factory(redis_server.url)
    assert n.flush(0)
    for i in range(2000):
        n.publish_progress("t", i)
    assert n.flush(10)
    assert 2000 == n.stats()["published"]

    down = notifier_factory(unreachable_url())
    down.publish_progress("t", 1)
    started = time.monotonic()
    assert down.flush(0.3) is False
    assert time.monotonic() - started >= 0.3


def test_overflow_drop_newest_refuses_and_counts(notifier_factory: Callable[..., Notifier]) -> None:
    """With the queue full, new events are refused (False) and counted as queue_full."""
    n = notifier_factory(unreachable_url(), queue={"maxsize": 10, "batch_size": 5})
    results = [n.publish_progress("t", i) for i in range(100)]
    stats = n.stats()
    accepted = results.count(True)
    # The queue holds 10; the sender may hold one more batch of up to 5 while it retries.
    assert 10 <= accepted <= 15
    assert accepted == stats["accepted"]
    assert {"queue_full": 100 - accepted} == stats["dropped_by_reason"]
    assert results[:10] == [True] * 10 and results[-1] is False
    assert_invariant(stats)


def test_overflow_drop_oldest_accepts_and_evicts(notifier_factory: Callable[..., Notifier]) -> None:
    """With drop_oldest every call returns True and the oldest queued events are counted evicted."""
    n = notifier_factory(
        unreachable_url(), queue={"maxsize": 10, "batch_size": 5, "overflow": "drop_oldest"}
    )
    assert [True] * 100 == [n.publish_progress("t", i) for i in range(100)]
    stats = n.stats()
    assert 100 == stats["accepted"]
    assert 10 <= stats["pending"] <= 15
    assert {"evicted": 100 - stats["pending"]} == stats["dropped_by_reason"]
    assert_invariant(stats)


def test_stats_invariant_holds_at_every_moment_under_load(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """Sampled while 4 threads publish into a small queue, the invariant never breaks."""
    n = notifier_factory(redis_server.url, queue={"maxsize": 50, "batch_size": 16})
    done = threading.Event()
    samples: list[dict[str, object]] = []

    def sample() -> None:
        while not done.is_set():
            samples.append(n.stats())

    def publish() -> None:
        for i in range(5000):
            n.publish_progress("load", i)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=publish) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert n.flush(10)
    done.set()
    sampler.join()
    assert len(samples) > 10
    for s in samples:
        assert_invariant(s)
    final = n.stats()
    assert 20_000 == final["accepted"] + final["rejected"]
    assert final["accepted"] == final["published"]


def test_connection_events_are_logged_once_per_outage(
    notifier_factory: Callable[..., Notifier],
) -> None:
    """An unreachable Redis logs notifier_connect_failed once as a warning, not every retry."""
    n = notifier_factory(unreachable_url())
    with capture_logs() as logs:
        n.publish_progress("t", 1)
        wait_until(
            lambda: n._sender is not None and n._sender.router.state._failed_connects >= 5, 5
        )
        n.close(timeout=0)
    warnings = [e for e in logs if e["event"] == "notifier_connect_failed"]
    assert 1 == len(warnings)
    assert "warning" == warnings[0]["log_level"]
    assert "Connection refused" in warnings[0]["error"] or "Connect" in warnings[0]["error"]
    assert n.stats()["last_error"] == warnings[0]["error"]


def test_default_notifier_module_api(redis_server: RedisServer, collector: EventCollector) -> None:
    """notifier.configure / publish_* / flush / shutdown drive one lazily created default."""
    default.configure(make_config(redis_server.url))
    try:
        first = default.get_notifier()
        assert first is default.get_notifier()
        assert default.publish("d", "custom", {"k": 1})
        assert default.publish_progress("d", 50, message="half")
        assert default.publish_completed("d", result=[1])
        assert default.publish_failed("d", KeyError("x"), step="s")
        assert default.flush(5)
        events = collector.wait_for(4)
        assert ["custom", "progress", "completed", "failed"] == [e["type"] for e in events]
    finally:
        default.shutdown()
    assert first.stats()["thread_alive"] is False
    assert default.flush(0)  # nothing running, nothing pending


def test_heartbeat_reports_loop_lag_and_stops_when_the_loop_is_blocked(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """The notifier loop beats every heartbeat_interval; a blocked loop stops beating."""
    n = notifier_factory(redis_server.url, health={"heartbeat_interval": 0.05, "stale_after": 0.1})
    n.start()
    first = wait_until(lambda: n.stats()["heartbeat_at"], 5)
    wait_until(lambda: n.stats()["heartbeat_at"] > first, 5)
    sender = n._sender
    assert sender is not None and sender._loop is not None
    blocked = threading.Event()
    release = threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(5)  # deliberately blocks the notifier's loop

    sender._loop.call_soon_threadsafe(block)
    assert blocked.wait(5)
    frozen = n.stats()["heartbeat_at"]
    started = time.monotonic()
    while time.monotonic() - started < 0.3:  # six intervals with no heartbeat
        assert frozen == n.stats()["heartbeat_at"]
        time.sleep(0.02)
    release.set()
    wait_until(lambda: n.stats()["heartbeat_at"] > frozen, 5)
    assert n.stats()["loop_lag"] >= 0.0


def test_commands_redis_refuses_are_counted_as_redis_error_drops(
    redis_factory: Callable[..., RedisServer],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """An ACL that forbids some channels: those events are dropped as redis_error, others go."""
    server = redis_factory()
    with server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "limited", "on", ">limited-pw", "~*", "resetchannels",
            "&task:allowed*", "+@all",
        )  # fmt: skip
    collector = collector_factory(server.url)
    n = notifier_factory(f"redis://limited:limited-pw@127.0.0.1:{server.port}/0")
    with capture_logs() as logs:
        for i in range(10):
            assert n.publish_progress("allowed-1" if i % 2 else "denied-1", i)
        assert n.flush(5)
    stats = n.stats()
    assert (5, {"redis_error": 5}) == (stats["published"], stats["dropped_by_reason"])
    assert_invariant(stats)
    assert [1, 3, 5, 7, 9] == [e["data"]["progress"] for e in collector.wait_for(5)]
    errors = [e for e in logs if e["event"] == "notification_publish_failed"]
    assert errors and "NOPERM" in errors[0]["error"]
