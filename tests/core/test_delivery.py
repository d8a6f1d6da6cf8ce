"""Events reach a real subscriber from every caller: threads, foreign loops, except blocks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import pytest

from notifier import Notifier
from notifier.testing import EventCollector, RedisServer

from support.helpers import assert_invariant, lingering, wait_until_asleep


@pytest.fixture
def notifier(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url)


def test_main_thread_events_arrive_byte_exact_with_non_ascii(
    notifier: Notifier, collector: EventCollector
) -> None:
    """Every helper's event arrives as UTF-8 JSON on task:<id>, non-ASCII kept, not escaped."""
    assert notifier.publish("tâche-1", "custom", {"text": "naïve ☃ 日本", "n": [1, 2.5, None]})
    assert notifier.publish_progress("tâche-1", 42.0, message="étape 2/5", step="load")
    assert notifier.publish_completed("tâche-1", result={"rows": 10})
    assert notifier.publish_failed("tâche-1", ValueError("ça a échoué"))

    events = collector.wait_for(4)
    assert ["task:tâche-1"] * 4 == collector.channels
    assert "naïve ☃ 日本".encode() in collector.raw[0]
    assert b"\\u" not in collector.raw[0]
    custom, progress, completed, failed = events
    assert {"event_id", "type", "task_id", "timestamp", "data"} == set(custom)
    assert {"text": "naïve ☃ 日本", "n": [1, 2.5, None]} == custom["data"]
    assert {"progress": 42.0, "message": "étape 2/5", "step": "load"} == progress["data"]
    assert {"result": {"rows": 10}} == completed["data"]
    assert {"error": "ValueError: ça a échoué", "error_type": "ValueError"} == failed["data"]
    assert ["custom", "progress", "completed", "failed"] == [e["type"] for e in events]
    assert len({e["event_id"] for e in events}) == 4
    for event in events:
        assert event["timestamp"].endswith("Z")
        datetime.fromisoformat(event["timestamp"])  # RFC 3339
        assert "tâche-1" == event["task_id"]


def test_32_threads_at_once_deliver_every_event_in_per_thread_order(
    notifier: Notifier, collector: EventCollector
) -> None:
    """32 threads publishing together: all accepted, delivered once, each thread's order kept."""
    per_thread = 300
    start = threading.Barrier(32)
    results: list[bool] = []

    def work(t: int) -> None:
        start.wait()
        ok = [notifier.publish_progress(f"thread-{t}", i) for i in range(per_thread)]
        results.extend(ok)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [True] * (32 * per_thread) == results
    assert notifier.flush(10)
    events = collector.wait_for(32 * per_thread)
    assert len({e["event_id"] for e in events}) == 32 * per_thread
    by_task: dict[str, list[float]] = {}
    for event in events:
        by_task.setdefault(event["task_id"], []).append(event["data"]["progress"])
    assert {f"thread-{t}": list(range(per_thread)) for t in range(32)} == by_task
    stats = notifier.stats()
    assert 32 * per_thread == stats["published"]
    assert_invariant(stats)


def test_publish_from_coroutines_on_another_threads_event_loop(
    notifier: Notifier, collector: EventCollector
) -> None:
    """Code inside a foreign running loop publishes without awaiting and without loop errors."""

    async def task_body() -> list[bool]:
        ok = []
        for i in range(100):
            ok.append(notifier.publish_progress("in-loop", i))
            await asyncio.sleep(0)  # the foreign loop keeps running its own work in between
        ok.append(notifier.publish_completed("in-loop", result="done"))
        return ok

    outcome: list[list[bool]] = []
    thread = threading.Thread(target=lambda: outcome.append(asyncio.run(task_body())))
    thread.start()
    thread.join()

    assert [[True] * 101] == outcome
    events = collector.wait_for(101)
    assert "completed" == events[-1]["type"]
    assert list(range(100)) == [e["data"]["progress"] for e in events[:-1]]


def test_except_block_inside_run_until_complete_on_a_per_process_loop(
    notifier: Notifier, collector: EventCollector
) -> None:
    """The original failure: publish_failed in an except block running on the worker's loop."""
    worker_loop = asyncio.new_event_loop()

    def run_async(coro: object) -> object:
        return worker_loop.run_until_complete(coro)  # type: ignore[arg-type]

    async def mark_task_failed(task_id: str, error: BaseException) -> bool:
        return notifier.publish_failed(task_id, error)

    async def step() -> None:
        raise RuntimeError("review service unavailable")

    try:
        for attempt in range(3):
            try:
                run_async(step())
            except RuntimeError as exc:
                assert run_async(mark_task_failed(f"wf-{attempt}", exc)) is True
    finally:
        worker_loop.close()

    events = collector.wait_for(3)
    assert ["wf-0", "wf-1", "wf-2"] == [e["task_id"] for e in events]
    assert {"RuntimeError: review service unavailable"} == {e["data"]["error"] for e in events}


def test_interleaved_tasks_keep_their_own_channels(
    notifier: Notifier, collector: EventCollector
) -> None:
    """Each event goes to the channel of its own task, with the configured prefix."""
    for i in range(60):
        notifier.publish_progress(f"task-{i % 3}", i)
    collector.wait_for(60)
    assert Counter({"task:task-0": 20, "task:task-1": 20, "task:task-2": 20}) == Counter(
        collector.channels
    )
    for channel, raw in zip(collector.channels, collector.raw, strict=True):
        assert channel == "task:" + json.loads(raw)["task_id"]


def test_an_event_after_an_idle_spell_wakes_the_sleeping_notifier_thread(
    redis_server: RedisServer,
    notifier_factory: Callable[..., Notifier],
    collector: EventCollector,
) -> None:
    """Once the notifier thread sleeps for want of events, the next put rings its doorbell: the
    event arrives at once, not at the next heartbeat (an hour away here), and so on each time."""
    hour = {"heartbeat_interval": 3600.0, "stale_after": 3600.0}
    n = notifier_factory(redis_server.url, health=hour)
    n.start()
    for round in range(3):
        wait_until_asleep(n)
        assert n.publish_progress("idle", round)
        collector.wait_for(round + 1, timeout=20)  # a lost ring would wait for the heartbeat
    assert [0, 1, 2] == [e["data"]["progress"] for e in collector.events]
    assert_invariant(n.stats())


def test_events_that_flow_wait_for_the_linger_and_go_in_one_batch(
    redis_server: RedisServer,
    notifier_factory: Callable[..., Notifier],
    collector: EventCollector,
) -> None:
    """With events flowing, the notifier thread sends at most one batch per queue.linger: events
    published meanwhile wait for the end of the interval (a lower bound, which load only makes
    longer), then arrive together."""
    n = notifier_factory(redis_server.url, queue={"linger": 1.0, "progress_interval": 0.0})
    n.start()
    lingering(n)
    sent = time.monotonic()
    for i in range(5):
        assert n.publish_progress("later", i)
    events = collector.wait_for(6, timeout=20)
    assert time.monotonic() - sent >= 0.5  # not sent at once: the linger held them
    assert [0, 0, 1, 2, 3, 4] == [e["data"]["progress"] for e in events]
    assert_invariant(n.stats())


def test_a_flush_or_a_full_batch_wakes_a_lingering_notifier_thread(
    redis_server: RedisServer,
    notifier_factory: Callable[..., Notifier],
    collector: EventCollector,
) -> None:
    """A caller about to wait for its events, or a full batch, does not wait for the linger (1 s
    here, the most there is: without the early wake-up each step would time out)."""
    n = notifier_factory(
        redis_server.url,
        queue={"linger": 1.0, "batch_size": 10, "progress_interval": 0.0},
        health={"heartbeat_interval": 3600.0, "stale_after": 3600.0},
    )
    n.start()
    lingering(n)
    assert n.publish_progress("flushed", 1)
    assert n.flush(20)  # nudged: sent now, not at the end of the linger
    collector.wait_for(2, timeout=20)
    for i in range(10):  # a full batch rings the dozing thread
        assert n.publish_progress("burst", i)
    events = collector.wait_for(12, timeout=0.9)
    assert list(range(10)) == [e["data"]["progress"] for e in events[2:]]
    assert_invariant(n.stats())
