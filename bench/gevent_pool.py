"""`make bench-gevent`: the notifier in a gevent-patched process, against a plain (prefork-like)
process and against the other design, a sender run cooperatively on the hub; side by side in one
run, each mode in a fresh process, alternately.

- **plain**: no monkey-patching; what a prefork child sees.
- **gevent**: ``monkey.patch_all()`` first; the notifier as shipped (a real OS thread with its own
  loop, ``notifier.native``).
- **cooperative**: the same process, but with the notifier forced onto gevent's patched threading
  (its "thread" a greenlet, its loop polling through gevent's selectors): the design the shipped
  one was chosen over.

Per mode: the publish call's cost (``--calls`` calls, a yield every 100 so a cooperative sender
can run), the lateness of a greenlet (a thread, in plain) that ticks every 10 ms while the
process publishes ``--rate`` events/s for ``--seconds`` and while it is idle, and whether a task's
own ``asyncio.run()`` still works while the notifier runs. Writes bench/results/gevent.md.

    python -m bench.gevent_pool [--runs 3] [--calls 100000] [--rate 5000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("plain", "gevent", "cooperative")
TICK = 0.01
PAYLOAD = {"step": "review", "attempt": 3}


def runtime(mode: str) -> tuple[Any, Any]:
    """Patch for ``mode`` and return how it spawns a ticker and how a caller yields."""
    if mode == "plain":
        import threading

        def spawn(fn: Any) -> Any:
            thread = threading.Thread(target=fn, daemon=True)
            thread.start()
            return thread

        return spawn, lambda: None
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from notifier import native

    if mode == "cooperative":
        native.gevent_patched = lambda: False  # type: ignore[assignment]
    return gevent.spawn, lambda: gevent.sleep(0)


def percentiles(values: list[float], scale: float) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": ordered[len(ordered) // 2] * scale,
        "p99": ordered[int(len(ordered) * 0.99)] * scale,
        "max": ordered[-1] * scale,
    }


def call_costs(n: Any, calls: int, yield_now: Any) -> dict[str, float]:
    """The publish call, ``calls`` times, yielding every 100 so a cooperative sender can run."""
    costs = []
    for i in range(calls):
        began = time.perf_counter_ns()
        n.publish(f"cost-{i % 100}", "tick", PAYLOAD)
        costs.append(time.perf_counter_ns() - began)
        if i % 100 == 99:
            yield_now()
    assert n.flush(60)
    return percentiles(costs, 1 / 1000)


def lateness(n: Any, spawn: Any, rate: float, seconds: float) -> dict[str, float]:
    """How late a 10 ms tick runs while this process publishes ``rate`` events/s (0: idle)."""
    late: list[float] = []
    ticking = [True]

    def tick() -> None:
        while ticking[0]:
            began = time.perf_counter()
            time.sleep(TICK)  # gevent's sleep where patched
            late.append(time.perf_counter() - began - TICK)

    ticker = spawn(tick)
    if rate:
        total, began, per_tick = int(rate * seconds), time.monotonic(), max(1, int(rate * TICK))
        for i in range(total):
            if i % per_tick == 0:
                time.sleep(max(0.0, began + i / rate - time.monotonic()))
            n.publish(f"load-{i % 50}", "tick", PAYLOAD)
    else:
        time.sleep(seconds)
    ticking[0] = False
    ticker.join()
    return percentiles(late, 1000)


def own_asyncio() -> str:
    """Whether a task's own ``asyncio.run()`` works while the notifier runs."""
    import asyncio

    async def nothing() -> int:
        await asyncio.sleep(0)
        return 1

    try:
        return "works" if asyncio.run(nothing()) == 1 else "wrong result"
    except RuntimeError as exc:
        return f"RuntimeError: {exc}"


def child(mode: str, redis_url: str, calls: int, rate: float, seconds: float) -> dict[str, Any]:
    """One mode, in this (fresh) process."""
    spawn, yield_now = runtime(mode)
    from notifier import Notifier
    from notifier.config import HistoryConfig, NotifierConfig, QueueConfig, RedisConfig

    config = NotifierConfig(
        redis=RedisConfig(url=redis_url),
        queue=QueueConfig(maxsize=200_000, progress_interval=0.0),
        history=HistoryConfig(enabled=True, maxlen=1000, ttl_seconds=600),
    )
    n = Notifier(config)
    n.start()
    deadline = time.monotonic() + 10
    while not n.stats()["connected"] and time.monotonic() < deadline:
        time.sleep(0.01)
    cost = call_costs(n, calls, yield_now)
    idle = lateness(n, spawn, 0.0, seconds)
    busy = lateness(n, spawn, rate, seconds)
    assert n.flush(60)
    result = {
        "call_p50_us": cost["p50"],
        "call_p99_us": cost["p99"],
        "idle": idle,
        "busy": busy,
        "asyncio_run_in_a_task": own_asyncio(),
        "published": n.stats()["published"],
        "accepted": n.stats()["accepted"],
    }
    n.close()
    return result


def run_mode(mode: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.gevent_pool", "--child", mode, "--redis", redis_url]
    command += ["--calls", str(args.calls), "--rate", str(args.rate)]
    command += ["--seconds", str(args.seconds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--redis")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.redis, args.calls, args.rate, args.seconds)))
        return
    from notifier.testing import RedisServer

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with RedisServer() as redis:
        for _ in range(args.runs):
            for mode in MODES:
                print(f"{mode} ...", flush=True)
                runs[mode].append(run_mode(mode, redis.url, args))
    lines = [
        f"# The gevent pool ({time.strftime('%Y-%m-%d')}, `python -m bench.gevent_pool`, "
        f"median of {args.runs})",
        "",
        f"Publish call: {args.calls:,} calls. Lateness of a 10 ms tick: idle, and while the "
        f"process publishes {args.rate:,.0f} events/s for {args.seconds:g} s.",
        "",
        "| mode | call p50 | call p99 | tick late idle p99 | busy p50 | busy p99 | busy max "
        "| a task's own asyncio.run() |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for mode in MODES:
        r = runs[mode]
        lines.append(
            f"| {mode} | {median(r, 'call_p50_us'):.1f} µs | {median(r, 'call_p99_us'):.1f} µs "
            f"| {median(r, 'idle', 'p99'):.2f} ms | {median(r, 'busy', 'p50'):.2f} ms "
            f"| {median(r, 'busy', 'p99'):.2f} ms | {median(r, 'busy', 'max'):.2f} ms "
            f"| {r[-1]['asyncio_run_in_a_task']} |"
        )
    ratio = median(runs["gevent"], "call_p50_us") / median(runs["plain"], "call_p50_us")
    lines += ["", f"Call p50, gevent / plain: {ratio:.2f}x."]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gevent.md").write_text(text)
    (RESULTS / "gevent.json").write_text(json.dumps(runs, indent=2))
    print(text)


if __name__ == "__main__":
    main()
