"""`make bench-channels`: sending to a Django Channels group with ``notifier.channels.group_send``,
against ``publish_progress`` in the caller and against ``async_to_sync(layer.group_send)`` on a
prefork Celery worker; one throwaway redis-server, one run.

1. **The caller's cost.** In this process, with Django configured by ``settings.configure`` (a
   channels_redis core layer on that Redis, bench/channels_app.py): bursts of ``--calls`` calls of
   ``notifier.channels.group_send(group, {"type": "progress.update", ...})`` and of
   ``notifier.publish_progress(task_id, pct)``, alternately, ``--rounds`` times each, the order
   flipped every round. Both go through the same notifier (the default one), with the default
   ``[queue]`` (progress coalescing on, as shipped), its thread started, connected and both
   paths warmed (the layer made on the thread, the alias checked) before any timing. Before each
   burst the queue is flushed empty and ``gc.collect()`` runs; the GC stays enabled for both, the
   cost list is allocated beforehand, the arguments are built outside the timed call. The group
   has one member, as it would with a page watching. Reported: p50 and p99 per call of each, and
   group_send's p50 over publish_progress's (the bound: at most 2x), per round.
2. **Side by side on a worker.** A real ``celery worker --pool prefork -c 1`` with
   ``--max-tasks-per-child 1`` (every task in a fresh child), sending ``--sends`` messages per
   task from the task's ``except`` block, ``--tasks`` tasks per batch, ``--batches`` batches per
   way, alternately: ``async_to_sync(get_channel_layer().group_send)`` against
   ``notifier.channels.group_send``. Per way: the caller's time per send (timed in the task around
   the call and returned in its result), the worker's CPU per task (psutil: the main process and
   its children, reaped ones included), how many sends raised (and what), were refused (False),
   or were lost: not read back by a channels_redis ``receive`` on a channel that joined the group
   before the batch.

Writes bench/results/channels.md and .json. About seven minutes with the defaults, most of it
Celery replacing the worker's children. ``--calls`` stays under ``[queue] maxsize`` (10,000), or
the bursts are partly dropped (the report counts them).

    python -m bench.channels [--calls 5000] [--rounds 5] [--tasks 50] [--sends 20] [--batches 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from notifier.testing import RedisServer
from tasks.launcher import WorkerProcess

RESULTS = Path(__file__).resolve().parent / "results"
WAYS = ("async_to_sync", "notifier")
NS = ("costs_ns", "first_ns", "later_ns")  # every send; each task's first; the others


def percentile(values: list[int], fraction: float) -> float:
    """The value at ``fraction`` of the sorted values, in microseconds (they are nanoseconds)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000


# 1. The caller's cost.


def burst(call: Callable[[int], object], calls: int) -> list[int]:
    """``call(i)`` for i in range(calls), each timed; the queue is empty and collected before."""
    import notifier

    if not notifier.get_notifier().flush(120):
        raise SystemExit("the notifier did not drain the previous burst in 120 s")
    gc.collect()
    costs = [0] * calls
    clock = time.perf_counter_ns
    for i in range(calls):
        began = clock()
        call(i)
        costs[i] = clock() - began
    return costs


def caller_cost(calls: int, rounds: int) -> dict[str, Any]:
    from channels.layers import get_channel_layer

    import notifier
    from notifier import channels

    group, task_id = f"cost-{uuid.uuid4().hex[:8]}", f"cost-{uuid.uuid4().hex[:8]}"
    # One member, as a page following the task would be; its messages are never read.
    asyncio.run(get_channel_layer().group_add(group, f"member-{uuid.uuid4().hex[:8]}"))
    messages = [{"type": "progress.update", "pct": 100 * i / calls} for i in range(calls)]
    pcts = [100 * i / calls for i in range(calls)]
    ways: dict[str, Callable[[int], object]] = {
        "group_send": lambda i: channels.group_send(group, messages[i]),
        "publish_progress": lambda i: notifier.publish_progress(task_id, pcts[i]),
    }
    for call in ways.values():
        burst(call, 100)  # the thread started and connected, the layer made, both paths warm
    runs: dict[str, list[list[int]]] = {name: [] for name in ways}
    before = notifier.get_notifier().stats()
    for round_ in range(rounds):
        for name in sorted(ways, reverse=round_ % 2 == 1):
            runs[name].append(burst(ways[name], calls))
    notifier.get_notifier().flush(120)
    after = notifier.get_notifier().stats()
    p50 = {name: [percentile(r, 0.5) for r in runs[name]] for name in ways}
    return {
        "calls": calls,
        "rounds": rounds,
        "p50_us": {name: percentile(sum(runs[name], []), 0.5) for name in ways},
        "p99_us": {name: percentile(sum(runs[name], []), 0.99) for name in ways},
        "round_p50_us": p50,
        "round_ratio": [
            g / p for g, p in zip(p50["group_send"], p50["publish_progress"], strict=True)
        ],
        "accepted": after["accepted"] - before["accepted"],
        "dropped": after["dropped"] - before["dropped"],
    }


# 2. Side by side on a prefork worker.


def worker_cpu(pid: int) -> float:
    """CPU seconds of the worker's main process and its children, the reaped ones included."""
    root = psutil.Process(pid)
    total = 0.0
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # it exited meanwhile
            times = child.cpu_times()
            total += times.user + times.system
    times = root.cpu_times()
    return total + times.user + times.system + times.children_user + times.children_system


def settled_cpu(pid: int) -> float:
    """The worker's CPU once it stops growing: the last child's exit (its drain) counted."""
    before, now = -1.0, worker_cpu(pid)
    while now - before > 0.005:
        time.sleep(0.3)
        before, now = now, worker_cpu(pid)
    return now


async def read_back(group: str, channel: str, expected: int, idle: float) -> list[int]:
    """What ``channel`` (a member of ``group``) receives: ``expected`` messages, or fewer when
    none arrives for ``idle`` seconds (a cancelled receive loses nothing in channels_redis)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    got: list[int] = []
    while len(got) < expected:
        try:
            message = await asyncio.wait_for(layer.receive(channel), idle)
        except TimeoutError:
            break
        got.append(message["n"])
    await layer.group_discard(group, channel)
    return got


def batch(worker: WorkerProcess, way: str, tasks: int, sends: int) -> dict[str, Any]:
    from channels.layers import get_channel_layer

    from bench.channels_app import send

    assert worker.process is not None
    group, channel = f"batch-{uuid.uuid4().hex[:8]}", f"reader-{uuid.uuid4().hex[:8]}"
    asyncio.run(get_channel_layer().group_add(group, channel))
    cpu, started = settled_cpu(worker.process.pid), time.perf_counter()
    pending = [
        send.apply_async(args=[way, group, i * sends, sends], queue=worker.queue)
        for i in range(tasks)
    ]
    results, task_failures = [], []
    for result in pending:
        try:
            results.append(result.get(timeout=120))
        except Exception as exc:  # a task that died or hung: its sends are counted as lost
            task_failures.append(f"{type(exc).__name__}: {exc}")
    wall = time.perf_counter() - started
    received = asyncio.run(read_back(group, channel, tasks * sends, idle=10.0))
    cpu = settled_cpu(worker.process.pid) - cpu
    errors = [e for r in results for e in r["errors"]]
    raised = {int(e.split(" ", 1)[0]) for e in errors}
    returned = {n for i in range(tasks) for n in range(i * sends, (i + 1) * sends)}
    return {
        "costs_ns": [c for r in results for c in r["costs_ns"]],
        "first_ns": [r["costs_ns"][0] for r in results],
        "later_ns": [c for r in results for c in r["costs_ns"][1:]],
        "sends": tasks * sends,
        "raised": len(errors),
        "errors": [e.split(" ", 1)[1] for e in errors],
        "refused": sum(r["refused"] for r in results),
        "task_failures": task_failures,
        "lost": len(returned - raised - set(received)),
        "duplicates": len(received) - len(set(received)),
        "children": len({r["pid"] for r in results}),
        "worker_cpu_ms_per_task": cpu * 1000 / tasks,
        "wall_ms_per_task": wall * 1000 / tasks,  # mostly Celery replacing the child
    }


def side_by_side(tasks: int, sends: int, batches: int, env: dict[str, str]) -> dict[str, Any]:
    worker = WorkerProcess(env, app="bench.channels_app", concurrency=1, max_tasks_per_child=1)
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    with worker:
        for way in WAYS:
            batch(worker, way, 5, sends)  # the first children forked, Redis warm
        for i in range(batches):
            for way in WAYS if i % 2 == 0 else WAYS[::-1]:
                runs[way].append(batch(worker, way, tasks, sends))
                summary = {k: v for k, v in runs[way][-1].items() if not k.endswith("_ns")}
                print(way, json.dumps(summary), flush=True)
    out: dict[str, Any] = {"tasks": tasks, "sends": sends, "batches": batches, "ways": {}}
    for way, done in runs.items():
        costs, first, later = ([c for r in done for c in r[k]] for k in NS)
        errors = collections.Counter(e for r in done for e in r["errors"])
        out["ways"][way] = {
            "send_p50_us": percentile(costs, 0.5),
            "send_p99_us": percentile(costs, 0.99),
            "first_p50_us": percentile(first, 0.5),
            "later_p50_us": percentile(later, 0.5),
            "later_p99_us": percentile(later, 0.99),
            "worker_cpu_ms_per_task": statistics.median(r["worker_cpu_ms_per_task"] for r in done),
            "children": sum(r["children"] for r in done),
            **{k: sum(r[k] for r in done) for k in ("sends", "raised", "refused", "lost")},
            "duplicates": sum(r["duplicates"] for r in done),
            "task_failures": [f for r in done for f in r["task_failures"]],
            "errors": dict(errors.most_common(5)),
        }
    return out


def report(cost: dict[str, Any], side: dict[str, Any]) -> str:
    stack = ", ".join(
        f"{name} {version(name)}" for name in ("channels", "channels-redis", "asgiref", "redis")
    )
    ratios = cost["round_ratio"]
    lines = [
        f"# notifier.channels.group_send ({time.strftime('%Y-%m-%d')}, `python -m bench.channels`)",
        "",
        f"{stack}, Python {'.'.join(map(str, sys.version_info[:3]))}.",
        "",
        f"Caller's cost in one process: bursts of {cost['calls']:,} calls, {cost['rounds']} "
        "rounds each, alternating, one notifier with the default [queue]; "
        f"{cost['accepted']:,} accepted, {cost['dropped']:,} dropped.",
        "",
        "| call | p50 | p99 |",
        "| --- | ---: | ---: |",
    ]
    for name in ("group_send", "publish_progress"):
        lines.append(f"| {name} | {cost['p50_us'][name]:.1f} µs | {cost['p99_us'][name]:.1f} µs |")
    lines += [
        "",
        f"group_send / publish_progress, p50 per round: median {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}); the bound is 2x.",
        "",
        f"On a prefork worker (-c 1, every task in a fresh child): {side['tasks']} tasks a batch, "
        f"{side['sends']} sends per task from its except block, {side['batches']} batches each "
        "way, alternating.",
        "",
        "| | async_to_sync(layer.group_send) | notifier.channels.group_send |",
        "| --- | ---: | ---: |",
    ]
    ways = [side["ways"][way] for way in WAYS]
    rows = (
        ("caller per send, p50", lambda w: f"{w['send_p50_us']:,.1f} µs"),
        ("caller per send, p99", lambda w: f"{w['send_p99_us']:,.1f} µs"),
        ("worker CPU per task", lambda w: f"{w['worker_cpu_ms_per_task']:.1f} ms"),
        ("first send in a child, p50", lambda w: f"{w['first_p50_us']:,.1f} µs"),
        ("later sends, p50", lambda w: f"{w['later_p50_us']:,.1f} µs"),
        ("later sends, p99", lambda w: f"{w['later_p99_us']:,.1f} µs"),
        ("sends", lambda w: f"{w['sends']:,} ({w['children']} children)"),
        ("raised", lambda w: f"{w['raised']:,}"),
        ("refused (False)", lambda w: f"{w['refused']:,}"),
        ("lost (not received)", lambda w: f"{w['lost']:,}"),
        ("tasks that failed", lambda w: f"{len(w['task_failures'])}"),
    )
    for label, cell in rows:
        lines.append(f"| {label} | {cell(ways[0])} | {cell(ways[1])} |")
    for way, w in zip(WAYS, ways, strict=True):
        for error, count in w["errors"].items():
            lines.append(f"\n{way} raised {count} x `{error}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per burst")
    parser.add_argument("--rounds", type=int, default=5, help="bursts of each call")
    parser.add_argument("--tasks", type=int, default=50, help="tasks per batch")
    parser.add_argument("--sends", type=int, default=20, help="sends per task")
    parser.add_argument("--batches", type=int, default=2, help="batches of each way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        config = Path(tmp) / "bench.toml"
        config.write_text(f'[redis]\nurl = "{redis.url}"\n')
        env = {"BENCH_BROKER": redis.url, "NOTIFIER_CONFIG": str(config)}
        os.environ.update(env)  # read by bench.channels_app, here and in the worker
        import bench.channels_app  # noqa: F401 - Django's settings and the notifier, configured

        cost = caller_cost(args.calls, args.rounds)
        print("caller", json.dumps(cost["p50_us"]), flush=True)
        side = side_by_side(args.tasks, args.sends, args.batches, env)
    text = report(cost, side)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "channels.md").write_text(text)
    (RESULTS / "channels.json").write_text(json.dumps({"caller": cost, "worker": side}) + "\n")


if __name__ == "__main__":
    main()
