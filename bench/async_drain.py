"""flush() and close() against aflush() and aclose(), awaited inside an event loop while Redis is
unreachable: how late a task that ticks every 10 ms on that loop runs meanwhile.

Each round runs the four waits one after another on one loop, beside the ticker: the blocking
``flush(timeout)`` called from a coroutine (what a FastAPI route or lifespan would write without
the awaitable twins; it warns), ``await aflush(timeout)``, leaving ``with Notifier(...)`` and
leaving ``async with Notifier(...)`` (both drain for ``shutdown.drain_timeout``). Then the same
with Redis up: the time to flush 10,000 events, blocking and awaited. Writes
bench/results/async_drain.md.

    python -m bench.async_drain [--rounds 3] [--timeout 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, RedisConfig, ShutdownConfig
from notifier.testing import RedisServer, free_port

TICK = 0.01
EVENTS_DOWN = 10  # queued while Redis is unreachable: they keep the waits waiting
EVENTS_UP = 10_000
RESULTS = Path(__file__).parent / "results"


def config(url: str, drain: float) -> NotifierConfig:
    return NotifierConfig(
        redis=RedisConfig(url=url, connect_timeout=1.0),
        queue=QueueConfig(progress_interval=0.0),
        shutdown=ShutdownConfig(drain_timeout=drain),
    )


async def ticking(wait: Callable[[], Awaitable[Any]]) -> tuple[float, int, float]:
    """Run ``wait()`` beside a task that sleeps TICK at a time: the wait's duration, how many
    ticks ran during it, and the longest gap between two ticks, in seconds."""
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(5 * TICK)
    gaps.clear()
    began = time.monotonic()
    await wait()
    took = time.monotonic() - began
    ticker.cancel()
    return took, len(gaps), max(gaps, default=took)


async def blocking_flush(n: Notifier, timeout: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the warning is what this measures
        n.flush(timeout)


async def awaited_flush(n: Notifier, timeout: float) -> None:
    await n.aflush(timeout)


async def blocking_exit(n: Notifier, timeout: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with n:
            pass


async def awaited_exit(n: Notifier, timeout: float) -> None:
    async with n:
        pass


WAITS: dict[str, Callable[[Notifier, float], Awaitable[None]]] = {
    "flush(timeout)": blocking_flush,
    "await aflush(timeout)": awaited_flush,
    "leaving with Notifier(...)": blocking_exit,
    "leaving async with Notifier(...)": awaited_exit,
}


def redis_down(rounds: int, timeout: float) -> dict[str, list[tuple[float, int, float]]]:
    found: dict[str, list[tuple[float, int, float]]] = {name: [] for name in WAITS}
    for _ in range(rounds):
        for name, wait in WAITS.items():
            n = Notifier(config(f"redis://127.0.0.1:{free_port()}/0", timeout))
            for i in range(EVENTS_DOWN):
                n.publish_progress("bench-drain", i)
            found[name].append(asyncio.run(ticking(lambda n=n, wait=wait: wait(n, timeout))))
            n._close(0)
    return found


def redis_up(rounds: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"flush()": [], "await aflush()": []}
    with RedisServer() as server:
        for _ in range(rounds):
            for name in found:
                n = Notifier(config(server.url, 5.0))
                n.start()
                began = time.monotonic()
                for i in range(EVENTS_UP):
                    n.publish_progress("bench-drain", i)

                async def wait(n: Notifier = n, name: str = name) -> bool:
                    if name == "flush()":
                        return n._flush(30)
                    return await n.aflush(30)

                assert asyncio.run(wait())
                found[name].append(time.monotonic() - began)
                n._close(5)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    down = redis_down(args.rounds, args.timeout)
    up = redis_up(args.rounds)
    lines = [
        f"Redis unreachable, {EVENTS_DOWN} events queued, timeout {args.timeout} s; a task "
        f"ticking every {TICK * 1000:.0f} ms on the same loop; median of {args.rounds} rounds.",
        "",
        "| wait | took (s) | ticks during it | longest gap between ticks (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, runs in down.items():
        took = statistics.median(r[0] for r in runs)
        ticks = statistics.median(r[1] for r in runs)
        gap = statistics.median(r[2] for r in runs)
        lines.append(f"| `{name}` | {took:.2f} | {ticks:.0f} | {gap * 1000:,.0f} |")
    lines += [
        "",
        f"Redis up: {EVENTS_UP:,} events published, then flushed (median of {args.rounds}).",
        "",
        "| wait | publish and flush (ms) |",
        "| --- | ---: |",
    ]
    for name, times in up.items():
        lines.append(f"| `{name}` | {statistics.median(times) * 1000:,.0f} |")
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "async_drain.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
