"""The consumer API: history then live, exactly once, across the switch and across reconnects."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog

from notifier import InvalidEvent, Notifier, NotifierConfig
from notifier.consumer import last_event, subscribe
from notifier.events import encode_event
from notifier.testing import EventCollector, RedisServer, wait_until

from support.faultproxy import FaultProxy
from support.helpers import make_config, new_task

Event = dict[str, Any]
HISTORY = {"enabled": True, "maxlen": 100_000, "ttl_seconds": 600}
TIMEOUT = 60.0  # whole-test deadline inside the event loop: generous, the machine is shared


def consumer_config(url: str) -> NotifierConfig:
    return make_config(url, history=HISTORY)


def run(main: Callable[[], Any]) -> Any:
    """Run an async test body in a fresh event loop, bounded by TIMEOUT."""

    async def bounded() -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await main()

    return asyncio.run(bounded())


async def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """wait_until on a worker thread, so that the event loop keeps running the subscribers."""
    return await asyncio.to_thread(wait_until, condition, timeout)


def published(collector: EventCollector, task_id: str) -> list[Event]:
    return [e for e in collector.events if e["task_id"] == task_id]


def wait_published_until_terminal(collector: EventCollector, task_id: str) -> list[Event]:
    """Every event the collector saw for the task, once it has seen the terminal one."""
    wait_until(lambda: any(e["type"] == "completed" for e in published(collector, task_id)), 30)
    return published(collector, task_id)


def subscribers(server: RedisServer, task_id: str) -> int:
    with server.client() as c:
        return int(c.pubsub_numsub(f"task:{task_id}")[0][1])


class Flow:
    """A thread that publishes progress events for one task without pause until told to stop,
    then ``completed``. Flushing every few events keeps it close to Redis's pace."""

    def __init__(self, notifier: Notifier, task_id: str) -> None:
        self.notifier = notifier
        self.task_id = task_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flow")

    def __enter__(self) -> Flow:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()
        assert self.notifier.flush(10)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and i < 50_000:
            self.notifier.publish_progress(self.task_id, i % 100, message=f"event {i}")
            i += 1
            if i % 20 == 0:
                self.notifier.flush(5)
        self.notifier.publish_completed(self.task_id, result={"events": i})


async def drain(events: AsyncIterator[Event], into: list[Event]) -> list[Event]:
    async for event in events:
        into.append(event)
    return into


def test_a_subscriber_after_the_failure_gets_it_and_everything_before(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A subscriber that connects after the task failed gets all its events, then the end."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("late")
    for percent in (10, 50, 90):
        assert n.publish_progress(task, percent)
    assert n.publish_failed(task, TimeoutError("review service did not answer"))
    assert n.flush(10)
    wait_until(lambda: 4 == len(published(collector, task)), 10)

    async def main() -> list[Event]:
        return [e async for e in subscribe(task, config=consumer_config(redis_server.url))]

    received = run(main)
    assert published(collector, task) == received
    assert ["progress", "progress", "progress", "failed"] == [e["type"] for e in received]


def test_subscribers_joining_mid_stream_get_everything_once_in_order(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Subscribers that join while events flow get every event from the start exactly once."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("middle")
    key = f"task-history:{task}"
    config = consumer_config(redis_server.url)

    async def main() -> list[list[Event]]:
        lists: list[list[Event]] = [[] for _ in range(5)]
        with Flow(n, task) as flow, redis_server.client() as c:
            tasks = []
            for got, at in zip(lists, (1, 100, 300, 600, 1000), strict=True):
                await wait_for(lambda at=at: c.xlen(key) >= at)
                tasks.append(asyncio.create_task(drain(subscribe(task, config=config), got)))
            # Every subscriber has switched to live once it yielded anything; past `mark` its
            # events were published after all the switches, while the flow was still running.
            await wait_for(lambda: all(lists))
            mark = c.xlen(key) + 300
            await wait_for(lambda: all(len(got) >= mark for got in lists))
            await asyncio.to_thread(flow.finish)
            return list(await asyncio.gather(*tasks))

    results = run(main)
    expected = wait_published_until_terminal(collector, task)
    assert len(expected) > 1300
    for received in results:
        assert expected == received


def test_a_cut_connection_resumes_without_gap_or_duplicate(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
    proxy_factory: Callable[[RedisServer], FaultProxy],
) -> None:
    """A subscriber whose connections are reset mid-stream reconnects and misses nothing."""
    proxy = proxy_factory(redis_server)
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("cut")

    async def main() -> tuple[list[Event], list[int]]:
        got: list[Event] = []
        resets = []
        with Flow(n, task) as flow:
            consumer = asyncio.create_task(
                drain(subscribe(task, config=consumer_config(proxy.url)), got)
            )
            for cut in range(1, 4):
                # Cut a working subscription: its two connections are up and events flow on it.
                await wait_for(lambda want=2 * cut: want == proxy.accepted)
                more = len(got) + 300
                await wait_for(lambda more=more: len(got) >= more)
                resets.append(await asyncio.to_thread(proxy.reset_all))
            await wait_for(lambda: len(got) >= 1200)
            await asyncio.to_thread(flow.finish)
            return await consumer, resets

    with structlog.testing.capture_logs() as logs:
        received, resets = run(main)
    assert wait_published_until_terminal(collector, task) == received
    assert [2, 2, 2] == resets  # each cut hit both connections of a working subscription
    assert 3 == sum(1 for log in logs if log["event"] == "consumer_reconnected")
    assert 8 == proxy.accepted


def test_events_published_while_redis_is_unreachable_arrive_when_it_returns(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
    proxy_factory: Callable[[RedisServer], FaultProxy],
) -> None:
    """Refused reconnects back off quietly; once one works, what was published meanwhile comes."""
    proxy = proxy_factory(redis_server)
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("outage")

    async def main() -> list[Event]:
        got: list[Event] = []
        consumer = asyncio.create_task(
            drain(subscribe(task, config=consumer_config(proxy.url)), got)
        )
        assert n.publish_progress(task, 0)
        await wait_for(lambda: got)
        proxy.refuse()
        for percent in range(10, 100, 10):
            assert n.publish_progress(task, percent)
        assert await n.aflush(10)
        await wait_for(lambda: proxy.accepted >= 6)  # the first pair's two, then refused retries
        proxy.forward()
        assert n.publish_completed(task)
        return await consumer

    with structlog.testing.capture_logs() as logs:
        received = run(main)
    assert wait_published_until_terminal(collector, task) == received
    assert 11 == len(received)
    # The first failure of the outage is a warning; the retries after it are debug, not logged.
    assert ["consumer_disconnected", "consumer_reconnected"] == [
        log["event"] for log in logs if log["event"].startswith("consumer_")
    ]


def test_a_silent_connection_is_detected_and_replaced(
    redis_server: RedisServer,
    notifier_factory: Callable[..., Notifier],
    proxy_factory: Callable[[RedisServer], FaultProxy],
) -> None:
    """A connection that stops answering (no reset, no FIN) is found out and replaced."""
    proxy = proxy_factory(redis_server)
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("silent")
    config = consumer_config(proxy.url)

    async def main() -> list[Event]:
        got: list[Event] = []
        consumer = asyncio.create_task(
            drain(subscribe(task, config=config, check_interval=0.2), got)
        )
        assert n.publish_progress(task, 1)
        await wait_for(lambda: got)
        proxy.blackhole()
        assert n.publish_progress(task, 2)
        assert n.publish_completed(task)
        assert await n.aflush(10)
        await wait_for(lambda: proxy.accepted > 2)  # the silence was noticed: a new connection
        proxy.forward()
        return await consumer

    received = run(main)
    assert [1, 2, None] == [e["data"].get("progress") for e in received]
    assert "completed" == received[-1]["type"]


def test_follow_goes_on_past_the_terminal_event_until_closed(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """With follow=True the iterator outlives a terminal event; closing it unsubscribes."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("follow")
    assert n.publish_progress(task, 50)
    assert n.publish_completed(task)
    assert n.flush(10)

    async def main() -> list[str]:
        events = subscribe(task, config=consumer_config(redis_server.url), follow=True)
        types = [(await anext(events))["type"], (await anext(events))["type"]]
        # Subscribed before the history was read: what is published now arrives live.
        assert n.publish(task, "reopened", {"by": "operator"})
        assert n.publish_failed(task, "second run failed")
        types += [(await anext(events))["type"], (await anext(events))["type"]]
        assert 1 == subscribers(redis_server, task)
        await events.aclose()
        await wait_for(lambda: 0 == subscribers(redis_server, task))
        return types

    assert ["progress", "completed", "reopened", "failed"] == run(main)


def test_last_event_is_the_latest_in_the_history_or_none(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """last_event returns the newest event of a task, and None for a task without history."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("last")
    for percent in range(5):
        assert n.publish_progress(task, percent)
    assert n.publish_completed(task, result=42)
    assert n.flush(10)
    config = consumer_config(redis_server.url)

    async def main() -> tuple[Event | None, Event | None]:
        return (
            await last_event(task, config=config),
            await last_event(new_task("unknown"), redis_url=redis_server.url),
        )

    latest, unknown = run(main)
    assert latest is not None
    assert ("completed", 42) == (latest["type"], latest["data"]["result"])
    assert unknown is None


def test_without_history_live_events_still_arrive(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """With history off on both sides, subscribe(replay=True) yields the live events, and ends."""
    n = notifier_factory(redis_server.url)
    task = new_task("nohistory")
    config = make_config(redis_server.url)

    async def main() -> list[Event]:
        consumer = asyncio.create_task(drain(subscribe(task, config=config, replay=True), []))
        await wait_for(lambda: 1 == subscribers(redis_server, task))
        assert n.publish_progress(task, 10)
        assert n.publish_completed(task)
        return await consumer

    assert ["progress", "completed"] == [e["type"] for e in run(main)]
    with redis_server.client() as c:
        assert 0 == c.exists(f"task-history:{task}")


def test_replay_false_yields_only_what_comes_after(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """With replay=False the existing history is skipped and only new events are yielded."""
    n = notifier_factory(redis_server.url, history=HISTORY)
    task = new_task("noreplay")
    assert n.publish_progress(task, 10)
    assert n.flush(10)

    async def main() -> list[Event]:
        events = subscribe(task, config=consumer_config(redis_server.url), replay=False)
        consumer = asyncio.create_task(drain(events, []))
        await wait_for(lambda: 1 == subscribers(redis_server, task))
        assert n.publish_progress(task, 20)
        assert n.publish_completed(task)
        return await consumer

    assert [20, None] == [e["data"].get("progress") for e in run(main)]


def test_an_event_only_in_the_history_is_yielded_when_the_channel_is_quiet(
    redis_server: RedisServer,
) -> None:
    """An event whose live message never came is read from the stream after check_interval."""
    task = new_task("quiet")
    key = f"task-history:{task}"

    async def main() -> list[Event]:
        got: list[Event] = []
        with redis_server.client() as c:
            c.xadd(key, {"event": encode_event(task, "progress", {"progress": 1}, 4096)})
            events = subscribe(task, config=consumer_config(redis_server.url), check_interval=0.2)
            consumer = asyncio.create_task(drain(events, got))
            await wait_for(lambda: got)  # the history is read: what comes next is not in it
            # Written to the stream only, never published: as if its live message was lost.
            c.xadd(key, {"event": encode_event(task, "failed", {}, 4096)})
        return await consumer

    assert ["progress", "failed"] == [e["type"] for e in run(main)]


def test_the_first_live_message_brings_the_history_written_before_it(
    redis_server: RedisServer,
) -> None:
    """Entries that reached the stream after it was read are yielded before the first live one."""
    task = new_task("switch")
    key, channel = f"task-history:{task}", f"task:{task}"
    first, missed, live = (encode_event(task, "progress", {"progress": p}, 4096) for p in (1, 2, 3))

    async def main() -> list[Event]:
        with redis_server.client() as c:
            c.xadd(key, {"event": first})
            events = subscribe(task, config=consumer_config(redis_server.url))
            received = [await anext(events)]
            # As when a publisher's PUBLISH ran before the SUBSCRIBE and its XADD after the read.
            c.xadd(key, {"event": missed})
            c.xadd(key, {"event": live})
            c.publish(channel, live)
            c.publish(channel, encode_event(task, "completed", {}, 4096))
        return received + [e async for e in events]

    received = run(main)
    assert [1, 2, 3, None] == [e["data"].get("progress") for e in received]


def test_closing_or_cancelling_a_subscription_closes_its_connections(
    redis_factory: Callable[..., RedisServer], notifier_factory: Callable[..., Notifier]
) -> None:
    """aclose() between events, or cancelling a task waiting for one, closes both connections."""
    server = redis_factory()
    n = notifier_factory(server.url, history=HISTORY)
    task = new_task("close")
    assert n.publish_progress(task, 1)
    assert n.flush(10)
    config = consumer_config(server.url)

    def clients() -> int:
        with server.client() as c:
            return sum(1 for client in c.client_list() if client["name"] != "notifier-probe")

    async def next_event(events: AsyncIterator[Event]) -> Event:
        return await anext(events)

    async def main() -> None:
        with server.client() as c:
            c.client_setname("notifier-probe")
        baseline = clients()  # the notifier's own connection
        events = subscribe(task, config=config)
        assert 1 == (await anext(events))["data"]["progress"]
        assert baseline + 2 == clients()
        await events.aclose()
        await wait_for(lambda: baseline == clients())

        waiting = asyncio.create_task(next_event(subscribe(task, config=config, replay=False)))
        # Subscribed first; the second connection opens for the stream read that follows.
        await wait_for(lambda: 1 == subscribers(server, task) and baseline + 2 == clients())
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await wait_for(lambda: baseline == clients())

    run(main)


def test_a_subscription_cancelled_at_any_moment_ends(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Cancelled at any point of connecting, subscribing or reading, a subscription ends."""
    server = redis_factory()
    config = consumer_config(server.url)

    async def next_event(events: AsyncIterator[Event]) -> Event:
        return await anext(events)

    async def main() -> list[int]:
        for ticks in range(80):  # cancel after 0, 1, 2, ... turns of the event loop
            task = new_task("cancel")
            waiting = asyncio.create_task(
                next_event(subscribe(task, config=config, replay=ticks % 2 == 0))
            )
            for _ in range(ticks):
                await asyncio.sleep(0)
            waiting.cancel()
            done, _ = await asyncio.wait({waiting}, timeout=10)
            if not done:  # the cancellation was swallowed: the subscription runs on
                waiting.cancel()
                return [ticks]
        return []

    assert [] == run(main)
    with server.client() as c:  # every subscription's connections are closed
        wait_until(lambda: 1 == len(c.client_list()), 10)


def test_a_malformed_task_id_raises_at_the_call() -> None:
    """subscribe and last_event refuse a task id that could match other tasks' channels."""
    with pytest.raises(InvalidEvent):
        subscribe("task-*")
    with pytest.raises(InvalidEvent):
        asyncio.run(last_event("two words"))


def test_the_history_stays_within_its_bounds_under_a_long_run(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """Over 20,000 events the stream never holds more than maxlen entries and keeps its TTL."""
    n = notifier_factory(
        redis_server.url, history={"enabled": True, "maxlen": 100, "ttl_seconds": 60}
    )
    task = new_task("long")
    key = f"task-history:{task}"
    lengths: list[int] = []
    done = threading.Event()

    def sample() -> None:
        with redis_server.client() as c:
            while not done.is_set():
                lengths.append(c.xlen(key))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for i in range(20_000):
            assert n.publish_progress(task, i % 100)
            if i % 1000 == 999:
                assert n.flush(10)
        assert n.flush(10)
    finally:
        done.set()
        sampler.join(10)
    assert 20_000 == n.stats()["published"]
    assert max(lengths) <= 100
    with redis_server.client() as c:
        assert 100 == c.xlen(key)
        assert 0 < c.ttl(key) <= 60

    async def main() -> Event | None:
        return await last_event(task, config=consumer_config(redis_server.url))

    latest = run(main)
    assert latest is not None
    assert 19_999 % 100 == latest["data"]["progress"]
