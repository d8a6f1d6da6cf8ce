"""Progress coalescing: one progress event per task per interval, the latest value, never after
the task's terminal event, and every event accounted for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from notifier import Notifier
from notifier.testing import EventCollector, RedisServer, wait_until

from support.helpers import assert_invariant


def progress_of(collector: EventCollector, task_id: str) -> list[float]:
    return [
        e["data"]["progress"]
        for e in collector.events
        if e["task_id"] == task_id and e["type"] == "progress"
    ]


def types_of(collector: EventCollector, task_id: str) -> list[str]:
    return [e["type"] for e in collector.events if e["task_id"] == task_id]


def test_a_tight_loop_reaches_redis_once_per_interval_with_the_latest_value(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """100,000 progress calls in a tight loop: at most duration / interval + 2 reach Redis, the
    last one carries the last value, and every call is published or counted as coalesced."""
    interval = 0.1
    n = notifier_factory(redis_server.url, queue={"progress_interval": interval})
    n.start()
    calls = 100_000
    started = time.monotonic()
    for i in range(calls):
        assert n.publish_progress("tight", i * 100 / calls, message=f"row {i}")
    duration = time.monotonic() - started
    assert n.flush(10)
    stats = n.stats()
    assert calls == stats["accepted"] == stats["published"] + stats["coalesced"]
    assert 0 == stats["dropped"]
    assert_invariant(stats)
    wait_until(lambda: len(progress_of(collector, "tight")) >= stats["published"], 10)
    received = progress_of(collector, "tight")
    assert stats["published"] == len(received)
    assert len(received) <= duration / interval + 2
    assert (calls - 1) * 100 / calls == received[-1]  # the latest value wins
    assert sorted(received) == received  # each one later than the one before


def test_a_held_value_goes_out_one_interval_after_the_previous_one(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """The first progress goes out at once; the next one, published just after, waits for the
    task's interval (not less), then goes out without any further call."""
    interval = 2.0
    n = notifier_factory(redis_server.url, queue={"progress_interval": interval})
    n.start()
    assert n.publish_progress("paced", 10)
    wait_until(lambda: progress_of(collector, "paced") == [10], 5)
    first_seen = time.monotonic()
    assert n.publish_progress("paced", 20)
    assert n.publish_progress("paced", 30)
    wait_until(lambda: progress_of(collector, "paced") == [10, 30], interval + 5)
    # Held, not sent at once: a bound a second away from both the interval and no wait at all.
    assert time.monotonic() - first_seen >= interval / 2
    assert 1 == n.stats()["coalesced"]  # 20 was replaced by 30


def test_other_tasks_are_not_held_back_by_a_busy_one(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """The interval is per task: a second task's first progress goes out while the first
    task's is held."""
    n = notifier_factory(redis_server.url, queue={"progress_interval": 30.0})
    n.start()
    assert n.publish_progress("busy", 1)
    wait_until(lambda: progress_of(collector, "busy") == [1], 5)
    assert n.publish_progress("busy", 2)  # held for 30 s
    assert n.publish_progress("quiet", 1)
    wait_until(lambda: progress_of(collector, "quiet") == [1], 5)
    assert [1] == progress_of(collector, "busy")


@pytest.mark.parametrize("terminal", ["completed", "failed", "revoked"])
def test_a_terminal_event_is_never_overtaken_by_its_tasks_progress(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
    terminal: str,
) -> None:
    """Progress held for a long interval goes out at once, before the terminal event that
    follows it; nothing of the task comes after the terminal event."""
    n = notifier_factory(redis_server.url, queue={"progress_interval": 30.0})
    n.start()
    task_id = f"ends-{terminal}"
    assert n.publish_progress(task_id, 50)
    wait_until(lambda: progress_of(collector, task_id) == [50], 5)
    for value in (60, 70, 80):
        assert n.publish_progress(task_id, value)
    if terminal == "completed":
        assert n.publish_completed(task_id, result=1)
    elif terminal == "failed":
        assert n.publish_failed(task_id, RuntimeError("boom"))
    else:
        assert n.publish(task_id, "revoked", {"terminated": True})
    wait_until(lambda: terminal in types_of(collector, task_id), 5)
    assert n.flush(5)
    assert ["progress", "progress", terminal] == types_of(collector, task_id)
    assert [50, 80] == progress_of(collector, task_id)
    assert_invariant(n.stats())


def test_many_tasks_ending_while_progress_streams_in_from_threads(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Four threads, 50 tasks each: progress in a tight loop, then completed. Every task's
    stream ends with its completed event and its last progress is its highest value."""
    n = notifier_factory(redis_server.url, queue={"progress_interval": 0.05})
    n.start()

    def work(worker: int) -> None:
        for t in range(50):
            task_id = f"w{worker}-t{t}"
            for step in range(200):
                n.publish_progress(task_id, step)
            n.publish_completed(task_id)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert n.flush(15)
    stats = n.stats()
    assert_invariant(stats)
    assert 0 == stats["dropped"]
    wait_until(lambda: len(collector.events) >= stats["published"], 10)
    for w in range(4):
        for t in range(50):
            task_id = f"w{w}-t{t}"
            kinds = types_of(collector, task_id)
            assert "completed" == kinds[-1] and 1 == kinds.count("completed"), kinds
            assert 199 == progress_of(collector, task_id)[-1]


def test_close_sends_what_it_holds(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A progress value held for its interval is delivered by close(), not dropped."""
    n = notifier_factory(redis_server.url, queue={"progress_interval": 60.0})
    n.start()
    assert n.publish_progress("closing", 1)
    wait_until(lambda: progress_of(collector, "closing") == [1], 5)
    assert n.publish_progress("closing", 2)
    n.close(timeout=5)
    wait_until(lambda: progress_of(collector, "closing") == [1, 2], 5)
    stats = n.stats()
    assert (2, 0, 0) == (stats["published"], stats["pending"], stats["dropped"])
    assert_invariant(stats)


def test_interval_zero_sends_every_progress_event(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """progress_interval = 0 turns coalescing off."""
    n = notifier_factory(redis_server.url, queue={"progress_interval": 0.0})
    for i in range(500):
        assert n.publish_progress("every", i)
    assert n.flush(10)
    wait_until(lambda: len(progress_of(collector, "every")) >= 500, 10)
    assert list(range(500)) == progress_of(collector, "every")
    assert 0 == n.stats()["coalesced"]


def test_drop_oldest_evicting_a_held_slot_keeps_the_books(
    notifier_factory: Callable[..., Notifier],
) -> None:
    """With Redis unreachable and a full queue, evicting a queued progress slot counts it as
    evicted; later progress of that task opens a new slot."""
    n = notifier_factory(
        "redis://127.0.0.1:1/0",
        queue={"maxsize": 10, "batch_size": 2, "overflow": "drop_oldest", "progress_interval": 5},
    )
    for i in range(200):
        assert n.publish_progress(f"t{i % 5}", i)  # coalesced into its task's open slot...
        assert n.publish(f"t{i % 5}", "log", {"i": i})  # ...until these push the slot out
    stats = n.stats()
    assert 400 == stats["accepted"]
    assert stats["dropped_by_reason"].get("evicted", 0) > 0
    assert stats["coalesced"] > 0
    assert_invariant(stats)
