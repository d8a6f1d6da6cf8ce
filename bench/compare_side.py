"""One side of `make bench-compare`: the caller and throughput figures of whichever ``notifier``
this process imports (bench/compare.py puts a checkout first on PYTHONPATH), as one JSON line.

Only the public API, the same at every commit worth comparing: Notifier, its config
dataclasses, publish_progress, publish_failed, flush, close.

    python bench/compare_side.py URL
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import notifier
from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, RedisConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's bench/
from bench.delivery import EVENT, CountingSubscriber, RedisServerClient  # noqa: E402

BURST = 20_000
STEADY = 1_000  # at 1,000 calls/s
THROUGHPUT = 100_000


def queue_config(**values: int) -> QueueConfig:
    """QueueConfig with these values and bench/compare.py's --queue settings, each where this
    side's QueueConfig has the key (an older commit may not)."""
    settings = json.loads(os.environ.get("BENCH_QUEUE", "{}"))
    known = {f.name: f.type for f in dataclasses.fields(QueueConfig)}
    for key, value in settings.items():
        if key in known:
            values[key] = int(value) if known[key] in ("int", int) else value
    return QueueConfig(**values)


def p50_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def steady(send: Callable[[int], object]) -> float:
    """The p50 of ``send`` called 1,000 times a second."""
    samples, due = [], time.perf_counter()
    for i in range(STEADY):
        due += 1 / 1000
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        started = time.perf_counter_ns()
        send(i)
        samples.append(time.perf_counter_ns() - started)
    return p50_us(samples)


def floor() -> dict[str, float]:
    """The floor's burst and steady p50s (bench/alternatives.py): machine, not code, so they
    should not move between the two sides; when they do, the machine did."""
    from bench.alternatives import floor as make_floor

    send, _ = make_floor("")
    samples = []
    for i in range(BURST):
        started = time.perf_counter_ns()
        send("bench-task", {**EVENT, "i": i})
        samples.append(time.perf_counter_ns() - started)
    return {
        "floor_burst_p50_us": p50_us(samples),
        "floor_steady_p50_us": steady(lambda i: send("bench-task", {**EVENT, "i": i})),
    }


def caller(n: Notifier) -> dict[str, float]:
    """publish_progress and publish_failed, timed on this thread: back to back, and steady."""
    error = TimeoutError("review service did not answer")
    out: dict[str, float] = {}
    for name, send in (
        ("progress", lambda i: n.publish_progress("bench-task", 50.0, message="step", i=i)),
        ("failed", lambda i: n.publish_failed("bench-task", error, **EVENT, i=i)),
    ):
        samples = []
        for i in range(BURST):
            started = time.perf_counter_ns()
            send(i)
            samples.append(time.perf_counter_ns() - started)
        out[f"{name}_burst_p50_us"] = p50_us(samples)
        n.flush(30)
    out["failed_steady_p50_us"] = steady(
        lambda i: n.publish_failed("bench-task", error, **EVENT, i=i)
    )
    n.flush(30)
    return out


def throughput(url: str) -> dict[str, float]:
    """publish_failed as fast as it goes, until Redis acknowledged all, with a live subscriber
    (bench/delivery.py) that must receive every event: events/s, CPU/event."""
    n = Notifier(NotifierConfig(redis=RedisConfig(url=url), queue=queue_config(maxsize=THROUGHPUT)))
    n.start()
    error = TimeoutError("review service did not answer")
    n.publish_failed("tp", error, **EVENT)
    n.flush(30)
    port = urlsplit(url).port or 6379
    subscriber = CountingSubscriber(port, "task:tp")
    gc.collect()
    cpu, started = time.process_time(), time.perf_counter()
    for i in range(THROUGHPUT):
        n.publish_failed("tp", error, **EVENT, i=i)
    n.close(timeout=60)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = n.stats()
    if stats["published"] != THROUGHPUT + 1:
        raise SystemExit(f"published {stats['published']} of {THROUGHPUT + 1}")
    RedisServerClient(port).publish("task:tp", "END")
    received, _ = subscriber.wait()
    if received != THROUGHPUT:
        raise SystemExit(f"the subscriber received {received} of {THROUGHPUT}")
    return {"events_per_s": THROUGHPUT / elapsed, "cpu_us_per_event": cpu / THROUGHPUT * 1e6}


def main() -> None:
    url = sys.argv[1]
    config = NotifierConfig(redis=RedisConfig(url=url), queue=queue_config(maxsize=BURST * 2))
    with Notifier(config) as n:
        n.publish_progress("bench-task", 0.0)  # warm up: connect, first-call imports
        n.flush(30)
        figures = {**floor(), **caller(n)}
    figures.update(throughput(url))
    print(json.dumps({"notifier": notifier.__file__, **figures}))


if __name__ == "__main__":
    main()
