"""`make bench-workflows`: what a workflow channel costs the worker, side by side with the
lifecycle alone, on one real prefork worker in one run.

The same group of 500 tasks (bench/workflow_app.py: each reports its progress once) is sent
with the workflow channel off in the sending process (``install(app, workflows=False)``: the
lifecycle alone) and on (every member event is also a step of its workflow), alternately,
``--rounds`` times each, to one worker. For each batch: the
worker's CPU time (main process and children, from /proc) per task, Redis's (the broker, the
result backend and the notifier's commands, workflow scripts included), the wall time from the
first send to the last result, and in the sending process the time per task to send them
(with the workflow, its declarations included). Reported: the medians, and each workflow figure as a
ratio of the lifecycle's. The bound to hold: the workflow adds at most 10% to the worker's
time per task.

    python -m bench.workflows [--members N] [--rounds R]   (also part of ``make bench``)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from celery import group
from celery.result import ResultSet

from notifier import Notifier, load_config
from notifier.testing import RedisServer
from tasks.launcher import WorkerProcess

RESULTS = Path(__file__).resolve().parent / "results"
TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children, from /proc."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def batch(worker: WorkerProcess, redis: RedisServer, kind: str, members: int) -> dict[str, float]:
    import notifier.celery
    from bench.workflow_app import app, tick  # configured from the environment set in main()

    notifier.celery.install(app, None, workflows=kind == "workflow")
    assert worker.process is not None and redis.process is not None
    pid, server = worker.process.pid, redis.process.pid
    cpu, server_cpu, started = tree_cpu(pid), tree_cpu(server), time.perf_counter()
    results = group(tick.s(i) for i in range(members)).apply_async().results
    sent = time.perf_counter()
    ResultSet(results).join(timeout=300, propagate=True)
    done = time.perf_counter()
    # The worker's last events (a result is stored before the task's end is published): wait
    # for its CPU to settle, so that what it spends on them counts in this batch.
    before = -1.0
    while (now := tree_cpu(pid)) != before:
        before = now
        time.sleep(0.2)
    return {
        "worker_cpu_ms_per_task": (now - cpu) * 1000 / members,
        "redis_cpu_ms_per_task": (tree_cpu(server) - server_cpu) * 1000 / members,
        "wall_ms_per_task": (done - started) * 1000 / members,
        "send_us_per_task": (sent - started) * 1e6 / members,
    }


def library_batch(n: Notifier, workflow: bool, tasks: int) -> dict[str, float]:
    """What the worker's child does for each task, without Celery: the lifecycle's three events
    (one of them progress) and the wait for them at the task's end; joined to a workflow or not.
    CPU per task, the process's and the calling thread's (the rest is the notifier thread's)."""
    group_id = str(uuid.uuid4())
    process, caller = time.process_time(), time.thread_time()
    for i in range(tasks):
        task_id = str(uuid.uuid4())
        if workflow:
            n.integration.join_workflow(task_id, group_id)
        n.publish(task_id, "started", {"task": "bench.tick", "retries": 0})
        n.publish_progress(task_id, 50, message="half way")
        n.publish_completed(task_id, result=i, task="bench.tick")
        n.integration.leave_workflow(task_id)
        n.flush(1.0)
    return {
        "library_cpu_us_per_task": (time.process_time() - process) * 1e6 / tasks,
        "caller_cpu_us_per_task": (time.thread_time() - caller) * 1e6 / tasks,
    }


def measure_library(tasks: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"lifecycle": [], "workflow": []}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        config = Path(tmp) / "bench.toml"
        config.write_text(f'[redis]\nurl = "{redis.url}"\n[history]\nenabled = true\n')
        with Notifier(load_config(config)) as n:
            library_batch(n, False, 200)
            library_batch(n, True, 200)
            for round_ in range(rounds):
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for joined in order:
                    kind = "workflow" if joined else "lifecycle"
                    runs[kind].append(library_batch(n, joined, tasks))
    medians = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    return {"members": tasks, "rounds": rounds, "runs": runs, "medians": medians}


def measure(members: int, rounds: int) -> dict[str, Any]:
    """Both kinds of batch on one worker, alternately; every batch's figures, and the medians."""
    runs: dict[str, list[dict[str, float]]] = {"lifecycle": [], "workflow": []}
    cores = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        config = Path(tmp) / "bench.toml"
        config.write_text(f'[redis]\nurl = "{redis.url}"\n[history]\nenabled = true\n')
        env = {"BENCH_BROKER": redis.url, "NOTIFIER_CONFIG": str(config)}
        worker = WorkerProcess(env, app="bench.workflow_app", pool="prefork", concurrency=2)
        env["BENCH_QUEUE"] = worker.queue
        worker.env.update(env)
        os.environ.update(env)
        pinned = _pin(worker, redis)
        with worker:
            batch(worker, redis, "lifecycle", 50)  # warm up both paths once
            batch(worker, redis, "workflow", 50)
            for round_ in range(rounds):
                order = ("lifecycle", "workflow") if round_ % 2 == 0 else ("workflow", "lifecycle")
                for kind in order:
                    runs[kind].append(batch(worker, redis, kind, members))
                    print(kind, json.dumps(runs[kind][-1]), flush=True)
    os.sched_setaffinity(0, cores)
    medians = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    return {
        "members": members,
        "rounds": rounds,
        "runs": runs,
        "medians": medians,
        "pinned": pinned,
    }


def _pin(worker: WorkerProcess, redis: RedisServer) -> bool:
    """On two cores or more: the worker (and its children) on the first, Redis and this process
    on the others, so that what Redis spends on the scripts does not take the worker's core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None or redis.process is None:
        return False
    worker.args = ["taskset", "-c", str(cores[0]), *worker.args]
    others = set(cores[1:])
    os.sched_setaffinity(redis.process.pid, others)
    os.sched_setaffinity(0, others)
    return True


def table(result: dict[str, Any], title: str | None = None) -> str:
    runs, medians = result["runs"], result["medians"]
    lines = [
        title
        or (
            f"A group of {result['members']} on one prefork worker (2 children): the workflow "
            f"channel against the lifecycle alone, {result['rounds']} rounds each, alternating "
            "(median, and the range)."
        ),
        "",
        "| per task | lifecycle alone | with the workflow channel | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for field in medians["lifecycle"]:
        cells = []
        for kind in ("lifecycle", "workflow"):
            values = [r[field] for r in runs[kind]]
            cells.append(f"{medians[kind][field]:.3f} ({min(values):.3f}-{max(values):.3f})")
        ratio = medians["workflow"][field] / medians["lifecycle"][field]
        lines.append(f"| {field} | {cells[0]} | {cells[1]} | {ratio:.3f} |")
    return "\n".join(lines)


def library_table(library: dict[str, Any]) -> str:
    return table(
        library,
        f"The same per task in one process, without Celery ({library['members']} tasks a batch, "
        f"{library['rounds']} rounds each, alternating): the library's own cost, the "
        "figure that the worker's noise above hides.",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    result = measure(args.members, args.rounds)
    library = measure_library(2000, args.rounds)
    result["library"] = library
    text = table(result) + "\n\n" + library_table(library)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workflows.md").write_text(text + "\n")
    (RESULTS / "workflows.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
