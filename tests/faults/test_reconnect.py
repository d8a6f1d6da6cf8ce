"""Redis going away and coming back: nothing raised, nothing lost, slow connections replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable

from structlog.testing import capture_logs

from notifier import Notifier
from notifier.link import Link, publish_command
from notifier.testing import EventCollector, RedisServer, wait_until

from support.faultproxy import FaultProxy
from support.helpers import assert_invariant


def seqs(collector: EventCollector) -> list[int]:
    return [e["data"]["seq"] for e in collector.events if "seq" in e["data"]]


def test_redis_killed_and_restarted_mid_stream_loses_nothing(
    redis_factory: Callable[..., RedisServer],
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """SIGKILL of redis-server mid-stream, restart on the same port: every event arrives."""
    server = redis_factory()
    proxy = proxy_factory(server)  # lets the test hold the notifier off while subscribers return
    before = collector_factory(server.url)
    n = notifier_factory(proxy.url)
    total = 4000
    errors: list[BaseException] = []
    results: list[bool] = []

    def publish() -> None:
        try:
            for i in range(total):
                results.append(n.publish("restart", "tick", {"seq": i}))
                if i % 20 == 0:
                    time.sleep(0.01)  # pacing: about 2,000 events/s
        except BaseException as exc:
            errors.append(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    wait_until(lambda: len(before.raw) >= 500, 10)
    server.kill()
    proxy.refuse()
    server.start()
    after = collector_factory(server.url)
    proxy.forward()
    publisher.join()
    assert [] == errors
    assert [True] * total == results
    assert n.flush(15)

    # Published means Redis accepted it; the subscriber may still be reading the tail.
    wait_until(lambda: len(set(seqs(before) + seqs(after))) >= total, 10)
    assert set(range(total)) == set(seqs(before) + seqs(after))
    stats = n.stats()
    assert total == stats["published"]
    assert stats["reconnects"] >= 1
    assert_invariant(stats)


def test_send_past_publish_timeout_discards_the_connection(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Replies slower than publish_timeout: the connection is replaced, never reused; all arrive."""
    proxy = proxy_factory(redis_server)
    n = notifier_factory(proxy.url, redis={"publish_timeout": 0.2, "connect_timeout": 2.0})
    for i in range(10):
        n.publish("slow", "tick", {"seq": i})
    assert n.flush(5)
    connections_before = proxy.accepted
    # A round trip of 0.6 s: connecting (2 round trips, 2 s allowed) works, every send times out.
    proxy.latency(0.3)
    with capture_logs() as logs:
        for i in range(10, 20):
            assert n.publish("slow", "tick", {"seq": i})
        wait_until(lambda: sum(e["event"] == "notification_publish_timeout" for e in logs) >= 2, 10)
        proxy.forward()
        assert n.flush(10)
    assert proxy.accepted >= connections_before + 2  # one new connection after each timeout
    wait_until(lambda: len(set(seqs(collector))) >= 20, 10)
    assert set(range(20)) == set(seqs(collector))
    stats = n.stats()
    assert 20 == stats["published"]
    assert stats["resent"] >= 1
    assert_invariant(stats)


def test_a_connection_given_up_on_releases_its_socket_and_buffer_at_once(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Redis frozen mid-batch (SIGSTOP): the send times out and closing the connection frees the
    socket and the unsent bytes at once. A graceful close would wait for a Redis that never reads,
    keeping both for every connection the notifier gave up on."""
    server = redis_factory()
    assert server.process is not None
    frozen = server.process.pid

    async def main() -> None:
        link = await Link.open(server.url, 5.0)
        writer = link._writer
        batch = publish_command(b"task:frozen", b"x" * 1_000_000) * 32  # beyond socket buffers
        os.kill(frozen, signal.SIGSTOP)
        try:
            try:
                async with asyncio.timeout(0.3):
                    await link.execute(batch, 32)
            except TimeoutError:
                pass
            else:
                raise AssertionError("a frozen Redis answered")
            assert writer.transport.get_write_buffer_size() > 0  # bytes were still waiting
            await link.close()
            async with asyncio.timeout(2):  # the socket is closed: nothing is waited for
                await writer.wait_closed()
        finally:
            os.kill(frozen, signal.SIGCONT)

    asyncio.run(main())


def test_drop_oldest_delivers_the_newest_events_after_an_outage(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """With overflow = drop_oldest, what survives an outage is the most recent events."""
    proxy = proxy_factory(redis_server)
    proxy.refuse()
    n = notifier_factory(
        proxy.url, queue={"maxsize": 10, "batch_size": 5, "overflow": "drop_oldest"}
    )
    for i in range(100):
        assert n.publish("old", "tick", {"seq": i})
    proxy.forward()
    assert n.flush(10)
    stats = n.stats()
    collector.wait_for(stats["published"])
    delivered = seqs(collector)
    assert set(range(90, 100)) <= set(delivered)
    assert 100 - stats["dropped_by_reason"]["evicted"] == stats["published"] == len(delivered)
    assert_invariant(stats)


def test_forked_child_publishes_on_its_own_and_never_resends_the_parents_queue(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A child of a process with queued events starts afresh; the parent keeps working."""
    proxy = proxy_factory(redis_server)
    proxy.refuse()  # the parent's events stay queued across the fork
    n = notifier_factory(proxy.url)
    for i in range(50):
        n.publish("parent", "tick", {"seq": i})
    assert 50 == n.stats()["pending"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: on purpose
        pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            fresh = n.stats()
            ok = all(n.publish("child", "tick", {"seq": i}) for i in range(20))
            delivered = n.flush(20)
            code = 0 if (ok and delivered and fresh["accepted"] == 0) else 3
        finally:
            os._exit(code)
    proxy.forward()
    for i in range(50, 60):
        assert n.publish("parent", "tick", {"seq": i})
    _, status = os.waitpid(pid, 0)
    assert 0 == os.waitstatus_to_exitcode(status)
    assert n.flush(10)
    events = collector.wait_for(80)
    by_task: dict[str, list[int]] = {}
    for e in events:
        by_task.setdefault(e["task_id"], []).append(e["data"]["seq"])
    assert list(range(20)) == by_task["child"]
    assert list(range(60)) == sorted(by_task["parent"])
    assert 80 == len({e["event_id"] for e in events})
    assert 60 == n.stats()["published"]


def test_password_never_appears_in_logs_stats_or_errors(
    redis_factory: Callable[..., RedisServer],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """AUTH works with a password in the URL, and a wrong one fails without echoing either."""
    secret = "s3cr3t-Pa55word"
    server = redis_factory(password=secret)
    collector = collector_factory(server.url)
    wrong = server.url.replace(secret, "wr0ng-Pa55word")
    with capture_logs() as logs:
        good = notifier_factory(server.url)
        assert good.publish_completed("auth", result=1)
        collector.wait_for(1)
        bad = notifier_factory(wrong)
        bad.publish_completed("auth", result=2)
        wait_until(lambda: bad.stats()["last_error"], 5)
        text = " ".join(
            [repr(good), repr(bad), str(good.stats()), str(bad.stats()), repr(good.config)]
            + [repr(e) for e in logs]
        )
    assert "wr0ng-Pa55word" not in text and secret not in text
    assert "***" in text
    assert "password" in bad.stats()["last_error"].lower() or "auth" in bad.stats()["last_error"]


def test_idle_notifier_follows_redis_down_and_up(
    redis_factory: Callable[..., RedisServer], notifier_factory: Callable[..., Notifier]
) -> None:
    """With nothing to send, `connected` still turns False when Redis dies and True when back."""
    server = redis_factory()
    n = notifier_factory(server.url, health={"heartbeat_interval": 0.1, "stale_after": 0.2})
    n.start()  # connects at once, not at the first event
    wait_until(lambda: n.stats()["connected"], 5)
    server.kill()
    wait_until(lambda: not n.stats()["connected"], 5)
    assert n.stats()["last_error"]
    server.start()
    wait_until(lambda: n.stats()["connected"], 5)
    assert 1 == n.stats()["reconnects"]
    assert 0 == n.stats()["accepted"]
