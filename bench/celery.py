"""`make bench-celery`: what the notifier costs a Celery worker, beside bare Celery and Celery's
own task events, alternately in one run.

For each pool (prefork and threads, ``-c 1``), three workers run the same app
(bench/celery_app.py) side by side: bare Celery, bare Celery with ``-E`` (Celery's own task
events, what Flower needs) and ``notifier.celery.install(app)``; ``--baseline DIR`` adds a fourth,
``install(app)`` with the ``notifier`` package of the checkout DIR (an A/B of a change, in the
same run). Each round gives each worker, in a rotating order, a batch of ``--tasks`` trivial
tasks (``add(x, y)``) and a batch of ``--slow-tasks`` 10 ms tasks, all queued at once; results
are stored, as Celery does by default. For each batch: the worker's CPU time per task (user and
system, the main process and its pool children, from psutil, until it settles after the last
result), and tasks per second (from the first send to the last result). Each figure is also
taken as a ratio of bare Celery's in the same round, pool and workload; reported: the median
over the rounds, and the range. The machine's other load falls on every worker alike.

The whole tree's CPU swings from batch to batch by as much as the notifier costs (the main
process alone, which runs the consumer, the pool and the results, by about 100 µs a task), so
each batch is also read per thread (psutil's user and system time for each thread id): the
main process, each pool child's main thread (the task and the signal receivers) and the
child's other threads (the notifier thread). On prefork, the **notifier's share** of a batch is
its worker's child CPU per task (main thread and other threads) minus bare Celery's child main
thread in the same round, as a ratio to bare Celery's whole-tree CPU per task: what the
notifier adds, without the main process's noise, since a task that succeeds costs the main
process nothing more with ``install(app)``. A thread that is gone at the second read (a child
replaced meanwhile) counts what it had at the first read as nothing: its time is lost, never
negative.

    python -m bench.celery [--rounds 5] [--tasks 1000] [--slow-tasks 200] [--pools prefork,threads]
                           [--loglevel INFO] [--task-logs] [--no-results]
                           [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from celery import Celery

from notifier.testing import RedisServer
from tasks.launcher import WorkerProcess, client

CHECKOUT = Path(__file__).resolve().parent.parent
RESULTS = CHECKOUT / "bench" / "results"
WORKLOADS = {"trivial": ("bench.add", [2, 3]), "10ms": ("bench.sleep", [0.01])}
KINDS = ("bare", "events", "install")
SETTLE_STEP = 0.15  # how often the worker's CPU is read while it settles after a batch
SETTLE_MAX = 3.0
# The worker's parts, as thread_split() reads them: its main process, its pool children's main
# threads, and their other threads (the notifier thread).
THREAD_PARTS = ("main", "child_main", "child_other")


def thread_cpu(pid: int) -> dict[tuple[int, int], float]:
    """CPU seconds (user + system) of each thread of ``pid`` and its descendants, by (process
    id, thread id)."""
    root = psutil.Process(pid)
    out: dict[tuple[int, int], float] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            threads = process.threads()
        except psutil.NoSuchProcess:
            continue  # a recycled child exited meanwhile
        for thread in threads:
            out[process.pid, thread.id] = thread.user_time + thread.system_time
    return out


def thread_split(
    pid: int, before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]
) -> dict[str, float]:
    """CPU seconds spent between two :func:`thread_cpu` reads of worker ``pid``: its main
    process, its children's main threads, and their other threads. Only threads alive at the
    second read count; one that started meanwhile counts from zero."""
    split = dict.fromkeys(THREAD_PARTS, 0.0)
    for (process, thread), seconds in after.items():
        spent = max(0.0, seconds - before.get((process, thread), 0.0))
        if process == pid:
            split["main"] += spent
        elif thread == process:
            split["child_main"] += spent
        else:
            split["child_other"] += spent
    return split


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue  # a recycled child exited meanwhile
        total += times.user + times.system
    return total


class Worker:
    """One ``celery worker`` of the bench app, of one kind, with a client on its queue."""

    def __init__(self, kind: str, pool: str, broker: str, config: Path, args: argparse.Namespace):
        self.kind = kind
        env = {
            "BENCH_BROKER": broker,
            "BENCH_NOTIFIER": "0" if kind in ("bare", "events") else "1",
            "NOTIFIER_CONFIG": str(config),
            "BENCH_TASK_LOGS": "1" if args.task_logs else "0",
        }
        if kind == "baseline":
            # The baseline's notifier package alone goes first on the path: bench/ and tasks/
            # stay this checkout's, so that both sides run the same app and launcher.
            shadow = Path(tempfile.mkdtemp(prefix="bench-celery-base-"))
            (shadow / "notifier").symlink_to(Path(args.baseline).resolve() / "notifier")
            env["PYTHONPATH"] = str(shadow)
        extra = ["-E"] if kind == "events" else []
        self.process = WorkerProcess(
            env,
            app="bench.celery_app",
            pool=pool,
            concurrency=1,
            extra=extra,
            # `python -m celery` imports from its working directory first: the baseline's runs
            # in the shadow, so that its notifier is the baseline's, not this checkout's.
            cwd=env["PYTHONPATH"] if kind == "baseline" else None,
        )
        self.expected = Path(env.get("PYTHONPATH", str(CHECKOUT))) / "notifier"
        self.process.args[self.process.args.index("--loglevel") + 1] = args.loglevel
        if kind == "baseline":  # the shadow first, then this checkout (bench/, tasks/)
            self.process.env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{CHECKOUT}"
        self.app: Celery = client(broker)
        self.ignore_results = args.no_results

    def start(self) -> None:
        self.process.start()
        if self.kind in ("bare", "events"):
            return
        line = next((x for x in self.process.lines if x.startswith("bench_notifier_imported")), "")
        if not line:
            raise SystemExit(f"{self.kind}: the worker did not say which notifier it imported")
        imported = Path(line.split(" ", 1)[1].strip()).resolve().parent
        if imported != self.expected.resolve():
            raise SystemExit(f"{self.kind}: the worker imported {imported}, not {self.expected}")

    def stop(self) -> None:
        self.process.stop()
        self.app.close()

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def batch(self, workload: str, tasks: int) -> dict[str, float]:
        name, task_args = WORKLOADS[workload]
        queue = self.process.queue
        threads, cpu, started = thread_cpu(self.pid), tree_cpu(self.pid), time.perf_counter()
        with self.app.producer_or_acquire() as producer:
            results = [
                self.app.send_task(
                    name,
                    args=task_args,
                    queue=queue,
                    producer=producer,
                    # --no-results: only the last task's result is stored, to know the end
                    ignore_result=self.ignore_results and i < tasks - 1,
                )
                for i in range(tasks)
            ]
        # One child or thread takes them in order: the last result is the end of the batch.
        results[-1].get(timeout=600)
        done = time.perf_counter()
        # What the worker still spends on the batch after its last result (events not yet
        # published, the notifier thread's last polls) counts too: wait until its CPU settles.
        before, deadline = -1.0, time.monotonic() + SETTLE_MAX
        while (now := tree_cpu(self.pid)) != before and time.monotonic() < deadline:
            before = now
            time.sleep(SETTLE_STEP)
        split = thread_split(self.pid, threads, thread_cpu(self.pid))
        for result in results:
            result.forget()  # keep the backend's keys from piling up over the rounds
        return {
            "cpu_ms_per_task": (now - cpu) * 1000 / tasks,
            "tasks_per_s": tasks / (done - started),
            **{f"{part}_us_per_task": seconds * 1e6 / tasks for part, seconds in split.items()},
        }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    kinds = [*KINDS, *(["baseline"] if args.baseline else [])]
    sizes = {"trivial": args.tasks, "10ms": args.slow_tasks}
    # runs[pool][workload][kind]: one dict of figures per round
    runs: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        config = Path(tmp) / "bench.toml"
        config.write_text(f'[redis]\nurl = "{redis.url}"\n')
        for pool in args.pools.split(","):
            workers = [Worker(kind, pool, redis.url, config, args) for kind in kinds]
            try:
                for worker in workers:
                    worker.start()
                for worker in workers:  # warm up: imports, connections, the notifier thread
                    worker.batch("trivial", 200)
                runs[pool] = {w: {k: [] for k in kinds} for w in sizes}
                for round_ in range(args.rounds):
                    order = workers[round_ % len(workers) :] + workers[: round_ % len(workers)]
                    for workload, tasks in sizes.items():
                        if not tasks:
                            continue
                        for worker in order:
                            figures = worker.batch(workload, tasks)
                            runs[pool][workload][worker.kind].append(figures)
                            print(pool, workload, worker.kind, json.dumps(figures), flush=True)
            finally:
                for worker in workers:
                    worker.stop()
    return {"kinds": kinds, "sizes": sizes, "rounds": args.rounds, "runs": runs}


FIGURES = ("cpu_ms_per_task", "tasks_per_s", *(f"{part}_us_per_task" for part in THREAD_PARTS))
RATIOS = ("cpu_ms_per_task", "tasks_per_s")  # the figures also taken as a ratio of bare's


def share(figures: dict[str, float], bare: dict[str, float]) -> float:
    """The notifier's share of one batch: its worker's child CPU per task (main thread and
    other threads) minus bare Celery's child main thread, over bare Celery's whole-tree CPU per
    task, in the same round."""
    child = figures["child_main_us_per_task"] + figures["child_other_us_per_task"]
    return (child - bare["child_main_us_per_task"]) / (bare["cpu_ms_per_task"] * 1000)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """For each pool, workload, kind and figure: the median, the range, and the median ratio
    to bare Celery's figure of the same round; and, where the pool has children, the
    notifier's share (:func:`share`)."""
    out: dict[str, Any] = {}
    for pool, workloads in result["runs"].items():
        for workload, by_kind in workloads.items():
            bare = by_kind["bare"]
            if not bare:
                continue
            for kind, rounds in by_kind.items():
                figures = out.setdefault(pool, {}).setdefault(workload, {}).setdefault(kind, {})
                for figure in FIGURES:
                    values = [r[figure] for r in rounds]
                    figures[figure] = {
                        "median": statistics.median(values),
                        "min": min(values),
                        "max": max(values),
                    }
                    if figure in RATIOS:
                        ratios = [r[figure] / b[figure] for r, b in zip(rounds, bare, strict=True)]
                        figures[figure] |= {
                            "x_bare": statistics.median(ratios),
                            "x_bare_min": min(ratios),
                            "x_bare_max": max(ratios),
                        }
                if all(b["child_main_us_per_task"] for b in bare):  # a pool with children
                    shares = [share(r, b) for r, b in zip(rounds, bare, strict=True)]
                    figures["share"] = {
                        "median": statistics.median(shares),
                        "min": min(shares),
                        "max": max(shares),
                    }
    return out


LABELS = {
    "bare": "bare Celery",
    "events": "`-E` (Celery's task events)",
    "install": "`install(app)`",
    "baseline": "`install(app)`, baseline",
}


def table(result: dict[str, Any], stats: dict[str, Any]) -> str:
    lines = [
        f"Worker CPU per task and tasks per second, `-c 1`, {result['rounds']} rounds, "
        f"alternating; batches of {result['sizes']['trivial']} trivial and "
        f"{result['sizes']['10ms']} 10 ms tasks; median (range), and the median of each "
        "round's ratio to bare Celery. Per thread, in µs per task: the main process, the pool "
        "child's main thread and its other threads (the notifier thread); the notifier's share: "
        "the child's CPU minus bare Celery's child main thread, over bare Celery's whole-tree "
        "CPU, per round (prefork).",
        "",
        "| pool | tasks | worker | CPU per task | x bare | tasks/s | x bare "
        "| main µs | child main µs | child other µs | notifier's share |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pool, workloads in stats.items():
        for workload, by_kind in workloads.items():
            for kind, figures in by_kind.items():
                cpu, rate = figures["cpu_ms_per_task"], figures["tasks_per_s"]
                threads = [figures[f"{part}_us_per_task"] for part in THREAD_PARTS]
                parts = [f"{t['median']:.0f} ({t['min']:.0f}-{t['max']:.0f})" for t in threads]
                cut = figures.get("share")
                notifier = (
                    f"{cut['median']:+.3f} ({cut['min']:+.3f} to {cut['max']:+.3f})"
                    if cut is not None and kind != "bare"
                    else "-"
                )
                lines.append(
                    f"| {pool} | {workload} | {LABELS[kind]} "
                    f"| {cpu['median']:.3f} ms ({cpu['min']:.3f}-{cpu['max']:.3f}) "
                    f"| {cpu['x_bare']:.2f} ({cpu['x_bare_min']:.2f}-{cpu['x_bare_max']:.2f}) "
                    f"| {rate['median']:.0f} | {rate['x_bare']:.2f} "
                    f"| {' | '.join(parts)} | {notifier} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=1000, help="trivial tasks per batch")
    parser.add_argument("--slow-tasks", type=int, default=200, help="10 ms tasks per batch")
    parser.add_argument("--pools", default="prefork,threads")
    parser.add_argument("--loglevel", default="INFO", help="the workers' --loglevel")
    parser.add_argument(
        "--task-logs",
        action="store_true",
        help="keep Celery's two INFO lines per task (received, succeeded): without them, as a "
        "worker logging at WARNING runs, the figures are the tasks' and the events' alone",
    )
    parser.add_argument(
        "--no-results",
        action="store_true",
        help="store no task's result but each batch's last (ignore_result, as many apps run)",
    )
    parser.add_argument("--baseline", help="a checkout whose notifier runs as a fourth worker")
    args = parser.parse_args()
    result = measure(args)
    stats = summary(result)
    result["summary"] = stats
    text = table(result, stats)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "celery.md").write_text(text + "\n")
    (RESULTS / "celery.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
