"""Per-task history: a capped stream written in the same pipeline as PUBLISH, or nothing at all."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from notifier import Notifier
from notifier.testing import EventCollector, RedisServer


def test_history_off_sends_nothing_but_publish(
    redis_factory: Callable[..., RedisServer], notifier_factory: Callable[..., Notifier]
) -> None:
    """With history disabled, the notifier writes nothing: MONITOR sees PUBLISH and PING only."""
    server = redis_factory()
    seen: list[str] = []
    monitor_client = server.client()
    ready = threading.Event()

    def monitor() -> None:
        with monitor_client.monitor() as m:
            ready.set()
            for command in m.listen():
                seen.append(command["command"].split(" ", 1)[0].upper())
                if command["command"].startswith("ECHO stop"):
                    return

    thread = threading.Thread(target=monitor)
    thread.start()
    assert ready.wait(5)
    n = notifier_factory(server.url)
    for i in range(50):
        n.publish_progress(f"t{i % 5}", i)
    assert n.flush(5)
    with server.client() as c:
        c.echo("stop")
        thread.join(5)
        assert 0 == c.dbsize()
    monitor_client.close()
    # HELLO and ECHO come from this test's own redis-py clients.
    assert {"PING", "PUBLISH"} == set(seen) - {"HELLO", "ECHO"}
    assert 50 == seen.count("PUBLISH")


def test_history_keeps_each_tasks_events_capped_with_a_ttl(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Every event is also in task-history:<id>, exactly as published; length and TTL bounded."""
    n = notifier_factory(
        redis_server.url, history={"enabled": True, "maxlen": 20, "ttl_seconds": 60}
    )
    for i in range(500):
        assert n.publish_progress(f"hist-{i % 2}", i)
    assert n.flush(10)
    collector.wait_for(500)
    with redis_server.client() as c:
        for task in ("hist-0", "hist-1"):
            key = f"task-history:{task}"
            assert 20 == c.xlen(key)
            assert 0 < c.ttl(key) <= 60
            stored = [json.loads(fields[b"event"]) for _, fields in c.xrange(key)]
            live = [e for e in collector.events if e["task_id"] == task]
            assert live[-20:] == stored
    stats = n.stats()
    assert 500 == stats["published"]
