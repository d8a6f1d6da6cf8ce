"""aflush, aclose and `async with`: the drain awaited inside an event loop, which keeps running;
the blocking flush and close warn when they are called inside one."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import notifier as default
from notifier import Notifier
from notifier.testing import EventCollector, RedisServer, free_port, wait_until

from support.helpers import assert_invariant, make_config

pytestmark = pytest.mark.timeout(60)

TICK = 0.01


def unreachable_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: connection refused


class Ticker:
    """A task that wakes every TICK on the loop under test and remembers its longest gap."""

    def __init__(self) -> None:
        self.longest_gap = 0.0
        self.ticks = 0

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            self.ticks += 1
            last = now


@asynccontextmanager
async def ticking() -> AsyncIterator[Ticker]:
    ticker = Ticker()
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(3 * TICK)  # it runs before the wait under test begins
    try:
        yield ticker
    finally:
        task.cancel()


def timed(awaitable: Callable[[], Awaitable[Any]]) -> tuple[Any, float, Ticker]:
    """Run ``awaitable()`` beside a ticker: its result, how long it took, the ticker."""

    async def main() -> tuple[Any, float, Ticker]:
        async with ticking() as ticker:
            began = time.monotonic()
            result = await awaitable()
            return result, time.monotonic() - began, ticker

    return asyncio.run(main())


def test_aflush_with_redis_up_returns_true_once_everything_is_published(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """aflush() returns True once every event accepted before it is on the wire."""
    n = notifier_factory(redis_server.url)
    for i in range(2000):
        assert n.publish_progress("aflush-up", i)

    flushed, _, ticker = timed(lambda: n.aflush(10))
    assert flushed is True
    stats = n.stats()
    assert (2000, 0) == (stats["published"], stats["pending"])
    collector.wait_for(2000)
    assert ticker.ticks > 0


def test_aflush_with_redis_down_waits_out_its_timeout_without_holding_the_loop(
    notifier_factory: Callable[..., Notifier],
) -> None:
    """With Redis unreachable aflush() returns False after its timeout; the loop ticks on."""
    n = notifier_factory(unreachable_url())
    for i in range(10):
        assert n.publish_progress("aflush-down", i)

    flushed, took, ticker = timed(lambda: n.aflush(1.0))
    assert flushed is False
    assert took >= 1.0
    # The blocking flush() holds the loop for the whole second; half of it would be a stall
    # far beyond any the shared machine causes.
    assert ticker.longest_gap < 0.5, ticker.longest_gap
    assert 10 == n.stats()["pending"]


def test_aflush_of_a_notifier_with_nothing_pending_returns_at_once(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """aflush() on a notifier that never accepted anything returns True without waiting."""
    n = notifier_factory(redis_server.url)
    assert asyncio.run(n.aflush(0)) is True


def test_aclose_with_redis_up_delivers_everything_and_stops_the_thread(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """aclose() drains the queue, stops the thread, and refuses later events."""
    n = notifier_factory(redis_server.url)
    for i in range(2000):
        assert n.publish_progress("aclose-up", i)

    closed, _, _ = timed(lambda: n.aclose(10))
    assert closed is None
    stats = n.stats()
    assert (2000, 0, 0, False) == (
        stats["published"],
        stats["pending"],
        stats["dropped"],
        stats["thread_alive"],
    )
    collector.wait_for(2000)
    assert n.publish_progress("aclose-up", 1) is False


def test_aclose_with_redis_down_counts_the_rest_as_shutdown_drops_without_holding_the_loop(
    notifier_factory: Callable[..., Notifier],
) -> None:
    """With Redis unreachable aclose() gives up at its deadline; what is left is counted."""
    n = notifier_factory(unreachable_url())
    for i in range(10):
        assert n.publish_progress("aclose-down", i)

    _, took, ticker = timed(lambda: n.aclose(1.0))
    assert took >= 1.0
    assert ticker.longest_gap < 0.5, ticker.longest_gap
    stats = n.stats()
    assert {"shutdown": 10} == stats["dropped_by_reason"]
    assert not stats["thread_alive"]
    assert_invariant(stats)


def test_async_with_starts_the_notifier_and_drains_it_on_exit(
    redis_server: RedisServer, collector: EventCollector
) -> None:
    """`async with Notifier(...)` starts the thread and awaits the drain on the way out."""

    async def main() -> Notifier:
        async with Notifier(make_config(redis_server.url)) as n:
            assert n.stats()["thread_alive"]
            for i in range(500):
                n.publish_progress("async-with", i)
        return n

    n = asyncio.run(main())
    stats = n.stats()
    assert (500, 0, False) == (stats["published"], stats["pending"], stats["thread_alive"])
    collector.wait_for(500)


def test_a_cancelled_aflush_leaves_no_wake_up_behind(
    redis_server: RedisServer,
    notifier_factory: Callable[..., Notifier],
    proxy_factory: Callable[[RedisServer], Any],
) -> None:
    """Cancelling aflush() forgets its wake-up; a later aflush() still returns True."""
    proxy = proxy_factory(redis_server)
    proxy.refuse()
    n = notifier_factory(proxy.url)
    assert n.publish_progress("cancelled-flush", 1)

    async def main() -> bool:
        waiting = asyncio.create_task(n.aflush(30))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert [] == n._ledger._wakeups
        proxy.forward()
        return await n.aflush(10)

    assert asyncio.run(main()) is True


def test_a_cancelled_aclose_still_ends_the_drain_at_its_deadline(
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Cancelling aclose() does not leave the thread retrying for good: at the deadline the rest
    is counted as dropped and the thread ends."""
    n = notifier_factory(unreachable_url())
    for i in range(5):
        assert n.publish_progress("cancelled-close", i)

    async def main() -> None:
        closing = asyncio.create_task(n.aclose(0.5))
        await asyncio.sleep(0.1)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing

    asyncio.run(main())
    wait_until(lambda: not n.stats()["thread_alive"], 10)
    stats = wait_until(lambda: (s := n.stats())["pending"] == 0 and s, 10)
    assert {"shutdown": 5} == stats["dropped_by_reason"]


def test_module_aflush_and_ashutdown_drive_the_default_notifier(
    redis_server: RedisServer, collector: EventCollector
) -> None:
    """notifier.aflush() and notifier.ashutdown() are the default notifier's awaitable drain."""
    default.configure(make_config(redis_server.url))

    async def main() -> tuple[bool, Notifier]:
        first = default.get_notifier()
        try:
            assert default.publish_progress("module-async", 50)
            return await default.aflush(10), first
        finally:
            await default.ashutdown()

    flushed, first = asyncio.run(main())
    assert flushed is True
    assert "progress" == collector.wait_for(1)[0]["type"]
    assert not first.stats()["thread_alive"]
    assert asyncio.run(default.aflush(0)) is True  # nothing running, nothing pending


@pytest.mark.parametrize(
    ("call", "names"),
    [
        ("flush", ("Notifier.flush()", "await notifier.aflush()")),
        ("close", ("Notifier.close()", "await notifier.aclose()")),
        ("with", ("leaving `with Notifier(...)`", "async with Notifier(...)")),
        ("module flush", ("notifier.flush()", "await notifier.aflush()")),
        ("module shutdown", ("notifier.shutdown()", "await notifier.ashutdown()")),
    ],
)
def test_blocking_drains_warn_inside_a_running_loop_at_the_callers_line(
    redis_server: RedisServer, call: str, names: tuple[str, str]
) -> None:
    """flush, close, leaving `with` and their module twins warn inside a running event loop,
    naming the async variant, and point at the line that called them."""
    n = Notifier(make_config(redis_server.url))
    default.configure(make_config(redis_server.url))

    async def main() -> list[warnings.WarningMessage]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if call == "flush":
                n.flush(1)
            elif call == "close":
                n.close(1)
            elif call == "with":
                with n:
                    pass
            elif call == "module flush":
                default.flush(1)
            else:
                default.shutdown(1)
        return caught

    try:
        caught = asyncio.run(main())
    finally:
        n._close(1)
        default.shutdown(1)
    assert 1 == len(caught), [str(w.message) for w in caught]
    warning = caught[0]
    assert warning.category is RuntimeWarning
    assert f"{names[0]} blocks the running event loop; use `{names[1]}`" == str(warning.message)
    assert __file__ == warning.filename


def test_blocking_drains_do_not_warn_outside_an_event_loop(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """flush() and close() on a thread without a running loop warn nothing."""
    n = notifier_factory(redis_server.url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert n.publish_progress("no-loop", 1)
        assert n.flush(5)
        n.close(1)
    assert [] == [str(w.message) for w in caught]
