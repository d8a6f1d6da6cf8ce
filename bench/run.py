"""`make bench`: the notifier against the alternatives, side by side, in one run, on one Redis.

Prints a markdown table and writes it, the raw numbers (JSON) and a plot (PNG) to bench/results/.
Every figure is the median of several runs; every comparison is a ratio of figures from this run.
Each caller-cost measurement also asks a stall probe, a process of its own (bench/stalls.py), how
late the machine woke a sleeping thread over the same window: the "machine max" columns, beside
which a caller's max can be read as the library's or the machine's.

    python -m bench.run [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import workflows
from bench.alternatives import ALTERNATIVES, notifier_publish_failed, sync_publish
from bench.delivery import EVENT, CountingSubscriber, RedisServerClient, redis_benchmark_ceiling
from bench.stalls import CallTimes, StallProbe
from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, RedisConfig
from notifier.testing import RedisServer, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.faultproxy import FaultProxy  # noqa: E402  (the proxy the tests use)

RESULTS = Path(__file__).resolve().parent / "results"
FLOOR = next(name for name in ALTERNATIVES if name.startswith("floor"))


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000

    return {"p50_us": at(0.50), "p99_us": at(0.99), "max_us": ordered[-1] / 1000}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


# 1. Caller-side cost ------------------------------------------------------------------------


def caller_cost(
    send: Callable[..., object], calls: int, rate: float | None, probe: StallProbe
) -> dict[str, float]:
    """Time each call; ``rate`` None is a burst (back to back), else calls per second. With the
    machine's own worst and p99 stall over the same window, from the probe."""
    samples: list[int] = []
    window_start = time.monotonic()
    interval = 0 if rate is None else 1 / rate
    due = time.perf_counter()
    for i in range(calls):
        if rate is not None:
            due += interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # sleeping releases the GIL, as a real task's own work would
        started = time.perf_counter_ns()
        send("bench-task", {**EVENT, "i": i})
        samples.append(time.perf_counter_ns() - started)
    machine = probe.window([(window_start, time.monotonic())])
    return {
        **percentiles(samples),
        "machine_p99_us": machine["p99_us"],
        "machine_max_us": machine["max_us"],
    }


def bench_caller(url: str, runs: int, quick: bool, probe: StallProbe) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, setup in ALTERNATIVES.items():
        slow = name in ("asgiref async_to_sync",)
        steady_calls = 300 if quick or slow else 2000
        burst_calls = 300 if quick or slow else 20_000
        steady, burst = [], []
        for _ in range(runs):
            send, close = setup(url)
            send("bench-task", EVENT)  # warm up: connect, first-call imports
            steady.append(caller_cost(send, steady_calls, rate=1000, probe=probe))
            burst.append(caller_cost(send, burst_calls, rate=None, probe=probe))
            close()
        out[name] = {"steady": median_of(steady), "burst": median_of(burst)}
        print(f"  caller cost  {name:<30} steady p50 {out[name]['steady']['p50_us']:9.1f} us")
    return out


# 2. Delivered throughput --------------------------------------------------------------------


def throughput(name: str, url: str, port: int, events: int) -> dict[str, float]:
    """Events/s published into Redis (acknowledged by it) with a live subscriber attached, as
    redis-benchmark counts too; the subscriber's own receiving rate (on this 2-core machine it
    shares a core with redis-server) and a check that it received every event."""
    if name == "notifier":
        # Room for the whole burst: the caller outruns the sender, and a drop would make the
        # notifier look faster than it is (the subscriber's count below would catch it).
        send, close = notifier_publish_failed(url, maxsize=events)
    else:
        send, close = sync_publish(url)
    send("warm-up", EVENT)
    subscriber = CountingSubscriber(port, "task:tp")
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(events):
        send("tp", {**EVENT, "i": i})
    close()  # the notifier drains here: every event has been acknowledged by Redis
    published, cpu = time.perf_counter(), time.process_time() - cpu0
    RedisServerClient(port).publish("task:tp", "END")
    delivered, received = subscriber.wait()
    if delivered != events:
        raise RuntimeError(f"{name}: the subscriber received {delivered} of {events} events")
    return {
        "events_per_s": events / (published - t0),
        "cpu_us_per_event": cpu / events * 1e6,
        "subscriber_received_per_s": events / (received - t0),
    }


def bench_throughput(url: str, port: int, runs: int, quick: bool) -> dict[str, Any]:
    sizes = {"notifier": 50_000 if quick else 300_000, "sync publish": 10_000 if quick else 50_000}
    out: dict[str, Any] = {}
    for name, events in sizes.items():
        out[name] = median_of([throughput(name, url, port, events) for _ in range(runs)])
        print(f"  throughput   {name:<30} {out[name]['events_per_s']:12,.0f} events/s")
    ceiling = statistics.median(
        redis_benchmark_ceiling(port, 200_000 if quick else 1_000_000) for _ in range(runs)
    )
    out["redis-benchmark PUBLISH -P 256"] = {"events_per_s": ceiling}
    print(f"  throughput   {'redis-benchmark PUBLISH -P 256':<30} {ceiling:12,.0f} events/s")
    return out


# 3. End-to-end latency ----------------------------------------------------------------------


def latency(url: str, port: int, rate: int, seconds: float) -> dict[str, float]:
    subscriber = subprocess.Popen(
        [sys.executable, "-m", "bench.subscriber", str(port), "task:lat"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert subscriber.stdout is not None
    subscriber.stdout.readline()  # "subscribed"
    send, close = notifier_publish_failed(url)
    send("warm-up", EVENT)
    interval, due = 1 / rate, time.perf_counter()
    for _ in range(int(rate * seconds)):
        due += interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        send("lat", {"sent_ns": time.monotonic_ns()})
    send("lat", {"end": True})
    result = json.loads(subscriber.stdout.readline())
    subscriber.wait(10)
    close()
    return {"p50_us": result["p50_us"], "p99_us": result["p99_us"], "max_us": result["max_us"]}


def bench_latency(url: str, port: int, runs: int, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in (1000, 10_000):
        out[f"{rate}/s"] = median_of(
            [latency(url, port, rate, 1 if quick else 3) for _ in range(runs)]
        )
        print(
            f"  latency      {rate:>6}/s  p50 {out[f'{rate}/s']['p50_us']:7.0f} us  "
            f"p99 {out[f'{rate}/s']['p99_us']:7.0f} us"
        )
    return out


# 4. Caller cost during an outage ------------------------------------------------------------


def bench_outage(server: RedisServer, runs: int, quick: bool, probe: StallProbe) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with FaultProxy("127.0.0.1", server.port) as proxy:
        steady, blackholed = [], []
        for _ in range(runs):
            send, close = notifier_publish_failed(proxy.url, maxsize=10_000)
            send("warm-up", EVENT)
            steady.append(caller_cost(send, 1000 if quick else 3000, rate=1000, probe=probe))
            proxy.blackhole()
            blackholed.append(caller_cost(send, 1000 if quick else 3000, rate=1000, probe=probe))
            proxy.forward()
            close()
        out["notifier"] = {"healthy": median_of(steady), "blackholed": median_of(blackholed)}
        send, close = sync_publish(proxy.url)  # socket_timeout=2.0: each call waits it out
        send("warm-up", EVENT)
        healthy_sync = caller_cost(send, 500, rate=1000, probe=probe)
        proxy.blackhole()
        blocked = caller_cost(lambda t, d: _swallow(send, t, d), 3, rate=None, probe=probe)
        proxy.forward()
        close()
        out["sync publish"] = {"healthy": healthy_sync, "blackholed": blocked}
    print(
        f"  outage       notifier p50 {out['notifier']['blackholed']['p50_us']:.1f} us, "
        f"sync publish p50 {out['sync publish']['blackholed']['p50_us'] / 1e6:.2f} s"
    )
    return out


def _swallow(send: Callable[..., object], task_id: str, data: dict[str, Any]) -> object:
    try:
        return send(task_id, data)
    except Exception as exc:  # redis.TimeoutError: what the task would have to catch
        return exc


# 5. Memory with Redis unreachable -----------------------------------------------------------


def bench_memory(quick: bool) -> dict[str, Any]:
    """1,000,000 calls into a notifier whose Redis does not answer: RSS growth vs the bound."""
    script = f"""
import json, resource
from notifier import Notifier, NotifierConfig
from notifier.config import RedisConfig
def rss(): return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
n = Notifier(NotifierConfig(redis=RedisConfig(url="redis://127.0.0.1:{free_port()}/0")))
n.start()
error = TimeoutError("review service did not answer")
n.publish_failed("warm-up", error)
before = rss()
for i in range({100_000 if quick else 1_000_000}):
    n.publish_failed("bench-task", error, i=i)
after = rss()
from notifier.events import encode_failure
size = len(encode_failure("bench-task", error, {{"i": 999999}}, 65536))
s = n.stats()
print("RESULT", json.dumps({{"rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20,
    "growth_mb": (after - before) / 2**20, "maxsize": n.config.queue.maxsize, "event_bytes": size,
    "bound_mb": n.config.queue.maxsize * size / 2**20, "dropped": s["dropped"]}}))
n.close(0)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["growth_over_bound"] = result["growth_mb"] / result["bound_mb"]
    print(
        f"  memory       growth {result['growth_mb']:.1f} MiB for a bound of "
        f"{result['bound_mb']:.1f} MiB (x{result['growth_over_bound']:.2f})"
    )
    return result


# 6. Progress coalescing ----------------------------------------------------------------------


def bench_coalescing(url: str, quick: bool) -> dict[str, Any]:
    """One task calling publish_progress in a tight loop, with coalescing off and on, side by
    side: the caller's cost per call, and how many events reached Redis (PUBLISH commands)."""
    calls = 100_000 if quick else 1_000_000
    out: dict[str, Any] = {}
    client = redis.Redis.from_url(url)
    for interval in (0.0, 0.1):
        config = NotifierConfig(
            redis=RedisConfig(url=url),
            # Room for every call: a full queue's refusals would make the baseline look cheap.
            queue=QueueConfig(maxsize=calls + 1, progress_interval=interval),
        )
        n = Notifier(config)
        n.start()
        n.publish_progress("bench-progress-warm-up", 0)
        n.flush(10)
        before = _publish_calls(client)
        times = CallTimes()
        started = time.monotonic()
        for i in range(calls):
            t = time.perf_counter_ns()
            n.publish_progress("bench-progress", i * 100 / calls, message="resizing images")
            times.add(time.perf_counter_ns() - t)
        duration = time.monotonic() - started
        n.flush(300)
        n.close(10)
        stats = n.stats()
        row = {
            **times.figures(),
            "duration_s": duration,
            "mean_us": duration / calls * 1e6,
            "reached_redis": _publish_calls(client) - before,
            "bound": calls if interval == 0 else duration / interval + 2,
            "coalesced": stats["coalesced"],
            "dropped": stats["dropped"],
        }
        out[f"{interval:g}"] = row
        print(
            f"  coalescing   interval {interval:g} s: p50 {row['p50_us']:.1f} us, "
            f"{row['reached_redis']:,} of {calls:,} reached Redis in {duration:.2f} s"
        )
    client.close()
    return out


def _publish_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_publish", {})
    return int(stats.get("calls", 0))


# Report -------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    caller, tp, lat = results["caller"], results["throughput"], results["latency"]
    ours = caller["notifier.publish_failed"]
    lines = [
        f"Run {results['when']} on {results['machine']}; median of {results['runs']} runs.",
        "",
        "| caller cost per notification (us) | steady p50 | steady p99 | steady max "
        "| machine max | burst p50 | burst p99 | burst max | machine max | p50 vs notifier "
        "| steady p50 x floor | burst p50 x floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    floor = caller[FLOOR]
    for name, row in caller.items():
        s, b = row["steady"], row["burst"]
        ratio = s["p50_us"] / ours["steady"]["p50_us"]
        lines.append(
            f"| {name} | {s['p50_us']:.1f} | {s['p99_us']:.1f} | {s['max_us']:.0f} "
            f"| {s['machine_max_us']:.0f} | {b['p50_us']:.1f} | {b['p99_us']:.1f} "
            f"| {b['max_us']:.0f} | {b['machine_max_us']:.0f} | {ratio:.1f}x "
            f"| {s['p50_us'] / floor['steady']['p50_us']:.1f}x "
            f"| {b['p50_us'] / floor['burst']['p50_us']:.1f}x |"
        )
    ceiling = tp["redis-benchmark PUBLISH -P 256"]["events_per_s"]
    lines += [
        "",
        "| throughput, live subscriber attached | events/s into Redis | CPU us per event "
        "| vs sync publish | of ceiling | subscriber received/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("notifier", "sync publish"):
        row = tp[name]
        lines.append(
            f"| {name} | {row['events_per_s']:,.0f} | {row['cpu_us_per_event']:.2f} "
            f"| {row['events_per_s'] / tp['sync publish']['events_per_s']:.1f}x "
            f"| {row['events_per_s'] / ceiling:.0%} | {row['subscriber_received_per_s']:,.0f} |"
        )
    lines.append(f"| redis-benchmark PUBLISH -P 256 (ceiling) | {ceiling:,.0f} | | | 100% | |")
    lines += [
        "",
        "| end-to-end latency (publish call -> subscriber) | p50 us | p99 us | max us |",
        "| --- | ---: | ---: | ---: |",
    ]
    for rate, row in lat.items():
        lines.append(
            f"| notifier at {rate} | {row['p50_us']:.0f} | {row['p99_us']:.0f} "
            f"| {row['max_us']:.0f} |"
        )
    out = results["outage"]
    n_ok, n_bad = out["notifier"]["healthy"], out["notifier"]["blackholed"]
    s_bad = out["sync publish"]["blackholed"]
    mem = results["memory"]
    lines += [
        "",
        "| Redis blackholed (caller cost) | p50 us | p99 us | max us | machine max us "
        "| vs healthy p50 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| notifier | {n_bad['p50_us']:.1f} | {n_bad['p99_us']:.1f} | {n_bad['max_us']:.0f} "
        f"| {n_bad['machine_max_us']:.0f} | {n_bad['p50_us'] / n_ok['p50_us']:.2f}x |",
        f"| sync publish (socket_timeout 2 s) | {s_bad['p50_us']:,.0f} | {s_bad['p99_us']:,.0f} "
        f"| {s_bad['max_us']:,.0f} | {s_bad['machine_max_us']:,.0f} | |",
        "",
        f"Memory, Redis unreachable, {1_000_000 if not results['quick'] else 100_000:,} calls: "
        f"RSS {mem['rss_before_mb']:.1f} -> {mem['rss_after_mb']:.1f} MiB "
        f"(+{mem['growth_mb']:.1f} MiB); bound queue.maxsize x event size = "
        f"{mem['maxsize']:,} x {mem['event_bytes']} B = {mem['bound_mb']:.1f} MiB; "
        f"growth / bound = {mem['growth_over_bound']:.2f}.",
    ]
    coalescing = results.get("coalescing")
    if coalescing:
        off, on = coalescing["0"], coalescing["0.1"]
        lines += [
            "",
            f"| progress coalescing: one task, {off['calls']:,} publish_progress calls in a "
            "tight loop | caller p50 us | caller p99 us | mean us | loop s | reached Redis "
            "| bound (loop / interval + 2) | coalesced |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, row in (("progress_interval = 0 (off)", off), ("progress_interval = 0.1", on)):
            lines.append(
                f"| {name} | {row['p50_us']:.1f} | {row['p99_us']:.1f} | {row['mean_us']:.2f} "
                f"| {row['duration_s']:.2f} | {row['reached_redis']:,} | {row['bound']:,.0f} "
                f"| {row['coalesced']:,} |"
            )
    if results.get("workflows"):
        wf = results["workflows"]
        lines += ["", workflows.table(wf), "", workflows.library_table(wf["library"])]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["caller"])
    p50 = [results["caller"][n]["steady"]["p50_us"] for n in names]
    p99 = [results["caller"][n]["steady"]["p99_us"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
    ax.set_yscale("log")
    ax.set_ylabel("caller cost per notification (us, log scale)")
    ax.set_xticks(list(xs), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
    ax.set_title("Time a task spends handing over one notification (1,000/s, lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke test")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "runs": args.runs,
        "quick": args.quick,
    }
    # No output-buffer limit for subscribers: Redis would otherwise disconnect a subscriber
    # that falls 32 MB behind, and the throughput runs push faster than that for a moment.
    with (
        RedisServer(extra=["--client-output-buffer-limit", "pubsub 0 0 0"]) as server,
        StallProbe() as probe,
    ):
        print(f"redis-server {server.binary} on port {server.port}")
        results["caller"] = bench_caller(server.url, args.runs, args.quick, probe)
        results["throughput"] = bench_throughput(server.url, server.port, args.runs, args.quick)
        results["latency"] = bench_latency(
            server.url, server.port, max(1, args.runs // 2), args.quick
        )
        results["outage"] = bench_outage(server, max(1, args.runs // 2), args.quick, probe)
        results["coalescing"] = bench_coalescing(server.url, args.quick)
    results["memory"] = bench_memory(args.quick)
    results["workflows"] = workflows.measure(100 if args.quick else 500, 2 if args.quick else 7)
    results["workflows"]["library"] = workflows.measure_library(
        200 if args.quick else 2000, 2 if args.quick else 7
    )
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = report(results)
    print()
    print(table)
    (RESULTS / "results.md").write_text(table + "\n")
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "caller_cost.png")
    print(f"\nwritten: {RESULTS / 'results.md'}, results.json, caller_cost.png")


if __name__ == "__main__":
    main()
