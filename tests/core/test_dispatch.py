"""Dispatches (``notifier.dispatch``): messages for another system that the notifier thread
delivers on its own loop, through the same outbox, ledger and drain as events. The dispatches
here record into this process; the channel layers' own are tests/django/test_channels.py."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from notifier import Notifier
from notifier.dispatch import Dispatch, Drop, Resources, Retry
from notifier.testing import EventCollector, RedisServer, wait_until

from support.helpers import assert_invariant

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """What the dispatches of one test did, and the loop-bound object they shared."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.threads: set[str] = set()
        self.made = 0
        self.closed = 0

    def make(self) -> object:
        self.made += 1
        return object()

    async def close(self, _resource: object) -> None:
        await asyncio.sleep(0)  # on the loop that is still running
        self.closed += 1


class Note(Dispatch):
    """Records ``number``; fails first ``failures`` times with ``error`` (Retry by default)."""

    __slots__ = ("error", "failures", "number", "recorder")

    def __init__(
        self, recorder: Recorder, number: int, failures: int = 0, error: Exception | None = None
    ) -> None:
        self.recorder, self.number, self.failures = recorder, number, failures
        self.error = error or Retry("the other system is down")

    async def send(self, resources: Resources) -> None:
        resources.get("recorder", self.recorder.make, self.recorder.close)
        self.recorder.threads.add(threading.current_thread().name)
        if self.failures:
            self.failures -= 1
            raise self.error
        self.recorder.sent.append(self.number)


@pytest.fixture
def notifier(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url)


def test_dispatches_are_sent_in_order_on_the_notifier_thread_and_counted(
    notifier: Notifier,
) -> None:
    """Each accepted dispatch is sent once, in order, on the notifier thread; flush() waits for
    them; stats() counts them as published."""
    recorder = Recorder()
    assert all(notifier.integration.dispatch("k", Note(recorder, i)) for i in range(200))
    assert notifier.flush(10)
    assert list(range(200)) == recorder.sent
    assert {"notifier"} == recorder.threads
    stats = notifier.stats()
    assert (200, 200) == (stats["accepted"], stats["published"])
    assert 1 == recorder.made  # one resource per thread, made on first use


def test_dispatches_do_not_hold_back_events_while_they_retry(
    notifier: Notifier, collector: EventCollector
) -> None:
    """A dispatch that keeps failing with Retry is sent again after a backoff (counted in
    resent) while events flow past it; it is published once it gets through."""
    recorder = Recorder()
    assert notifier.integration.dispatch("k", Note(recorder, 1, failures=3))
    for i in range(20):
        assert notifier.publish_progress("dispatch-events", i)
    collector.wait_for(20, 10)
    assert notifier.flush(10)
    assert [1] == recorder.sent
    stats = notifier.stats()
    assert 3 == stats["resent"]
    assert 21 == stats["published"]


def test_a_dropped_dispatch_is_counted_under_its_reason(notifier: Notifier) -> None:
    """Drop names the reason; any other exception is dispatch_error; neither reaches the caller
    and the invariant holds."""
    recorder = Recorder()
    d = notifier.integration.dispatch
    assert d("k", Note(recorder, 1, failures=1, error=Drop("channel_full", "full")))
    assert d("k", Note(recorder, 2, failures=1, error=ValueError("a bug")))
    assert d("k", Note(recorder, 3))
    assert notifier.flush(10)
    stats = notifier.stats()
    assert [3] == recorder.sent
    assert {"channel_full": 1, "dispatch_error": 1} == stats["dropped_by_reason"]
    assert 1 == stats["published"]
    assert_invariant(stats)


def test_close_drains_dispatches_and_closes_the_resources_on_the_thread(
    notifier: Notifier,
) -> None:
    """close() sends what is queued, then closes each resource on the notifier's loop."""
    recorder = Recorder()
    for i in range(50):
        assert notifier.integration.dispatch("k", Note(recorder, i))
    notifier.close(timeout=10)
    assert list(range(50)) == recorder.sent
    assert (1, 1) == (recorder.made, recorder.closed)


def test_a_dispatch_still_retrying_at_the_deadline_is_dropped_as_shutdown(
    notifier: Notifier,
) -> None:
    """A dispatch that never gets through is counted as a shutdown drop when close() gives up,
    and the resources are still closed."""
    recorder = Recorder()
    assert notifier.integration.dispatch("k", Note(recorder, 1, failures=10**6))
    wait_until(lambda: notifier.stats()["resent"] >= 2, 10)
    notifier.close(timeout=0.2)
    stats = notifier.stats()
    assert {"shutdown": 1} == stats["dropped_by_reason"]
    assert_invariant(stats)
    assert 1 == recorder.closed


def test_a_hanging_dispatch_times_out_and_is_sent_again(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """A send that hangs is cut at redis.publish_timeout and counts as transport trouble."""
    notifier = notifier_factory(redis_server.url, redis={"publish_timeout": 0.2})
    recorder = Recorder()

    class Hangs(Note):
        __slots__ = ()

        async def send(self, resources: Resources) -> None:
            if self.failures:
                self.failures -= 1
                await asyncio.Event().wait()
            self.recorder.sent.append(self.number)

    assert notifier.integration.dispatch("k", Hangs(recorder, 7, failures=1))
    assert notifier.flush(10)
    assert [7] == recorder.sent
    assert 1 == notifier.stats()["resent"]


def test_a_full_queue_refuses_or_evicts_a_dispatch_as_it_does_an_event(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """drop_oldest evicts a waiting dispatch for a newer one, counted as evicted; the dispatch
    being sent holds its place in the queue meanwhile, and is never evicted."""
    notifier = notifier_factory(
        redis_server.url, queue={"maxsize": 2, "batch_size": 2, "overflow": "drop_oldest"}
    )
    recorder = Recorder()
    sending, gate = threading.Event(), threading.Event()

    class Stalls(Note):
        __slots__ = ()

        async def send(self, resources: Resources) -> None:
            if self.number == 0:
                # Holds the notifier thread's whole loop, not only this send: nothing more is
                # taken from the queue until the gate opens, so the queue fills up for certain.
                sending.set()
                gate.wait(10)
            self.recorder.sent.append(self.number)

    assert notifier.integration.dispatch("k", Stalls(recorder, 0))
    assert sending.wait(10)  # taken, and the loop stopped in its send
    for i in range(1, 5):
        assert notifier.integration.dispatch("k", Stalls(recorder, i))
    gate.set()
    assert notifier.flush(10)
    assert [0, 4] == recorder.sent  # maxsize 2: the one in its send, and the newest
    stats = notifier.stats()
    assert {"evicted": 3} == stats["dropped_by_reason"]
    assert_invariant(stats)


def test_dispatches_that_retry_keep_their_places_in_the_bounded_queue(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """While a dispatch retries, the notifier thread goes on taking the next ones from the queue;
    each holds its place there until it is settled, so queue.maxsize still bounds what waits
    (without that, every call would be accepted into the dispatcher's own list)."""
    notifier = notifier_factory(redis_server.url, queue={"maxsize": 3, "batch_size": 3})
    recorder = Recorder()
    gate = threading.Event()

    class RetriesUntilTheGateOpens(Note):
        __slots__ = ()

        async def send(self, resources: Resources) -> None:
            if not gate.is_set():
                raise Retry("the other system is down")
            self.recorder.sent.append(self.number)

    accepted = []
    for i in range(6):
        if notifier.integration.dispatch("k", RetriesUntilTheGateOpens(recorder, i)):
            accepted.append(i)
            # Taken from the queue by the notifier thread before the next call.
            wait_until(lambda: 0 == notifier.stats()["queue_size"], 10)
    assert [0, 1, 2] == accepted
    assert {"queue_full": 3} == notifier.stats()["dropped_by_reason"]
    gate.set()
    assert notifier.flush(20)
    assert [0, 1, 2] == recorder.sent
    assert notifier.integration.dispatch("k", RetriesUntilTheGateOpens(recorder, 6))  # room again
    assert notifier.flush(20)
    assert_invariant(notifier.stats())


def test_a_forked_child_sends_its_own_dispatches_and_never_its_parents(
    notifier: Notifier,
) -> None:
    """After a fork the child's dispatches go through a thread and resources of its own."""
    recorder = Recorder()
    gate = threading.Event()

    class Waits(Note):
        __slots__ = ()

        async def send(self, resources: Resources) -> None:
            await asyncio.to_thread(gate.wait, 10)
            self.recorder.sent.append(self.number)

    assert notifier.integration.dispatch("k", Waits(recorder, 1))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own dispatch, then its own counters through the pipe
        code = 1
        try:
            child = Recorder()
            ok = notifier.integration.dispatch("k", Note(child, 2)) and notifier.flush(5)
            stats = notifier.stats()
            mine = ok and child.sent == [2] and stats["accepted"] == stats["published"] == 1
            os.write(write, b"ok" if mine else repr((child.sent, stats)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        assert b"ok" == pipe.read()
    assert 0 == status
    gate.set()
    assert notifier.flush(10)
    assert [1] == recorder.sent


def test_resources_are_made_once_per_key_and_closed_newest_first() -> None:
    """Resources.get makes an object on first use only; close() awaits each closer in reverse,
    and a closer that fails does not stop the others."""
    order: list[str] = []

    async def scenario() -> None:
        from notifier.logs import get_logger

        resources = Resources(get_logger("critical"))

        async def close(name: Any) -> None:
            order.append(name)
            if name == "b":
                raise RuntimeError("cannot close b")

        assert "a" == resources.get("a", lambda: "a", close)
        assert "a" == resources.get("a", lambda: "other", close)
        resources.get("b", lambda: "b", close)
        resources.get("c", lambda: "c", close)
        await resources.close()

    asyncio.run(scenario())
    assert ["c", "b", "a"] == order
