"""Helpers for the fault-injection tests: a paced publisher, a live subscriber that follows
faults, a de-duplicating tally, figures.

Tests check behaviour; the figures they measure on the way (worst publish call, duplicates, RSS)
are printed as ``FIGURES <name>: {json}`` lines, so that ``pytest -s`` reproduces every number in
docs/internals/reliability.md. With ``$NOTIFIER_FIGURES`` set they are also appended to that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Self

from notifier import NotifierConfig
from notifier.consumer import subscribe
from notifier.testing import EventCollector, wait_until

# No publish call takes this long, even while Redis misbehaves for seconds. A call does a dict
# build, an orjson dump and a non-blocking put (microseconds), but a shared 2-core machine
# stalls any thread for tens of milliseconds now and then; the bound is 10x above that noise,
# and still well under the waits it rules out (a publish_timeout, a failover).
NEVER_WAITS = 0.5


def report(name: str, **figures: Any) -> None:
    """Print the figures a test measured (and append them to $NOTIFIER_FIGURES when set)."""
    line = f"FIGURES {name}: {json.dumps(figures, sort_keys=True, default=str)}"
    print(line)
    target = os.environ.get("NOTIFIER_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class PacedPublisher:
    """Calls ``publish(i)`` for i in range(total) on its own thread at about ``rate`` calls/s.

    Records every call's start time and duration, its result and any exception, so a test can
    ask for the worst call inside a fault window. Pacing is by deadline (bursts of ``burst``
    calls), so a slow call does not lower the offered rate.
    """

    def __init__(
        self, publish: Callable[[int], bool], total: int, rate: float, burst: int = 20
    ) -> None:
        self._publish = publish
        self.total = total
        self.rate = rate
        self.burst = burst
        self.results: list[bool] = []
        self.errors: list[BaseException] = []
        self.started_at: list[float] = []
        self.durations: list[float] = []
        self._thread = threading.Thread(target=self._run, name="paced-publisher", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _run(self) -> None:
        begin = time.monotonic()
        for i in range(self.total):
            if i % self.burst == 0:
                ahead = begin + i / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the offered load, not waiting for a condition
            started = time.monotonic()
            try:
                result = self._publish(i)
            except BaseException as exc:  # the property under test: this never happens
                self.errors.append(exc)
                result = False
            self.durations.append(time.monotonic() - started)
            self.started_at.append(started)
            self.results.append(result)

    @property
    def calls(self) -> int:
        return len(self.results)

    def wait_calls(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` calls were made."""
        wait_until(lambda: self.calls >= count or not self._thread.is_alive(), timeout)

    def join(self, timeout: float = 60.0) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"publisher still running after {timeout}s ({self.calls} calls)")

    def worst(self, since: float = -math.inf, until: float = math.inf) -> float:
        """The longest call that started inside [since, until]."""
        n = len(self.durations)
        return max(
            (
                d
                for s, d in zip(self.started_at[:n], self.durations, strict=True)
                if since <= s <= until
            ),
            default=0.0,
        )


class Tally:
    """The events several collectors received, parsed once, counted by key and by event_id.

    ``key(event)`` names an event independently of its event_id (e.g. ``(task_id, seq)``); a key
    seen under two event_ids would mean two sends of what the caller published once *as two
    different events*, which no fault may cause.
    """

    def __init__(self, key: Callable[[dict[str, Any]], Hashable]) -> None:
        self._key = key
        self._sources: list[EventCollector] = []
        self._offsets: list[int] = []
        self.received = 0
        self.unparsable: list[bytes] = []
        self.by_id: dict[str, Hashable] = {}
        self.copies: Counter[str] = Counter()  # event_id -> how many times it arrived

    def add(self, collector: EventCollector) -> EventCollector:
        self._sources.append(collector)
        self._offsets.append(0)
        return collector

    def refresh(self) -> Self:
        for index, collector in enumerate(self._sources):
            raw = collector.raw[self._offsets[index] :]  # a slice of a list only appended to
            self._offsets[index] += len(raw)
            for message in raw:
                self.received += 1
                try:
                    event = json.loads(message)
                except ValueError:
                    self.unparsable.append(message)
                    continue
                self.copies[event["event_id"]] += 1
                self.by_id.setdefault(event["event_id"], self._key(event))
        return self

    @property
    def keys(self) -> Counter[Hashable]:
        """How many distinct event_ids carried each key (1 each when nothing was sent twice)."""
        return Counter(self.by_id.values())

    @property
    def duplicates(self) -> int:
        """Copies beyond the first of each event_id (at-least-once resends)."""
        return sum(self.copies.values()) - len(self.copies)

    def wait_for(self, expected: Iterable[Hashable], timeout: float = 20.0) -> None:
        """Wait until every expected key arrived; TimeoutError saying how many are missing."""
        wanted = set(expected)
        try:
            wait_until(lambda: wanted <= set(self.refresh().by_id.values()), timeout, 0.05)
        except TimeoutError:
            missing = wanted - set(self.by_id.values())
            raise TimeoutError(
                f"{len(missing)} of {len(wanted)} events missing after {timeout}s, "
                f"e.g. {sorted(missing, key=repr)[:5]}"
            ) from None


class LiveSubscriber:
    """notifier.consumer.subscribe() on its own thread and loop, following a failover; the
    event ids it received."""

    def __init__(self, config: NotifierConfig, task_id: str) -> None:
        self.ids: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(config, task_id))
        self._thread.start()

    def _main(self, config: NotifierConfig, task_id: str) -> None:
        try:
            asyncio.run(self._run(config, task_id))
        except BaseException as exc:  # the test says what ended the subscription
            self.errors.append(exc)

    async def _run(self, config: NotifierConfig, task_id: str) -> None:
        events = subscribe(task_id, config=config, follow=True, replay=True, check_interval=0.5)

        async def consume() -> None:
            async for event in events:
                self.ids.append(event["event_id"])

        consumer = asyncio.create_task(consume())
        await asyncio.to_thread(self._stop.wait)  # until the test is done with it
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await events.aclose()
        if consumer.done() and not consumer.cancelled() and consumer.exception():
            raise consumer.exception()  # type: ignore[misc]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def seq_key(event: dict[str, Any]) -> tuple[str, int]:
    """A streamed event's origin and number: what a Tally counts it by."""
    return event["task_id"], event["data"]["seq"]
