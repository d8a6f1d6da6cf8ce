"""Faults of processes: Celery children recycled after every task, and a storm of forks while
the parent publishes. Every event arrives once; a child never sends what its parent had
queued. Figures as in test_faults.py (``FIGURES`` lines with ``pytest -s``)."""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import notifier as default
from notifier import Notifier
from notifier.testing import EventCollector, RedisServer, wait_until

from support.celery import Harness
from support.faultproxy import FaultProxy
from support.faults import PacedPublisher, Tally, ms, report, seq_key
from support.helpers import assert_invariant, make_config

RATE = 2000.0  # the parent's events/s during the storm, as the streaming fault tests publish


@pytest.mark.timeout(150)
def test_prefork_child_per_task_delivers_every_event_of_100_tasks(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """worker_max_tasks_per_child=1 with 100 tasks: all 200 events reach the subscriber."""
    redis = redis_factory()
    tasks = 100
    started = time.monotonic()
    with Harness(redis, f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path, max_tasks_per_child=1) as h:
        task_ids = [h.new_task(["noop"]) for _ in range(tasks)]
        assert [{"success": True, "status": "completed"}] * tasks == h.run_all(
            "start_workflow", [(t,) for t in task_ids], timeout=90
        )
        expected = {(t, kind) for t in task_ids for kind in ("progress", "completed")}

        def arrived() -> set[tuple[str, str]]:
            return {(e["task_id"], e["type"]) for e in h.collector.events} & expected

        wait_until(lambda: arrived() == expected, 30, 0.1)
        events = [e for e in h.collector.events if (e["task_id"], e["type"]) in expected]
        elapsed = time.monotonic() - started
        closed = h.worker.reports()
    assert 2 * tasks == len(events) == len({e["event_id"] for e in events})
    assert closed and all(0 == e["dropped"] for e in closed)
    report(
        "celery_churn",
        tasks=tasks,
        events_expected=2 * tasks,
        events_received=len(events),
        children_reporting_close=len(closed),
        seconds=round(elapsed, 1),
    )


def _fork() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: on purpose
        return os.fork()


def _storm_child(k: int, inherited: Notifier, per_child: int) -> int:
    """A forked child's body: half its events through the default notifier, half through the
    notifier inherited from the parent. Its exit code says what went wrong."""
    task_id, half = f"storm-c{k}", per_child // 2
    ok = all(default.publish(task_id, "tick", {"seq": i}) for i in range(half))
    ok = all(inherited.publish(task_id, "tick", {"seq": i}) for i in range(half, per_child)) and ok
    if not ok:
        return 2
    if not (default.flush(30) and inherited.flush(30)):
        return 3
    stats = inherited.stats()  # the child's own counters, not the parent's
    if (half, half) != (stats["accepted"], stats["published"]):
        return 4
    return 0


@pytest.mark.timeout(120)
def test_fork_storm_sends_every_event_once_and_leaves_the_parent_alone(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """50 forked children publish 100 events each while the parent publishes: each event
    arrives exactly once, none of the parent's queued events is sent by a child."""
    proxy = proxy_factory(redis_server)
    proxy.latency(0.02)  # keeps the parent's queue non-empty at fork time
    tally = Tally(seq_key)
    tally.add(collector_factory(redis_server.url, "task:storm-*"))
    inherited = notifier_factory(proxy.url)
    default.configure(make_config(redis_server.url))
    children, per_child, parent_total = 50, 100, 4000
    try:
        parent = PacedPublisher(
            lambda i: (default if i % 2 else inherited).publish("storm-parent", "tick", {"seq": i}),
            parent_total,
            RATE,
        ).start()
        parent.wait_calls(200)
        pids, pending_at_fork = [], []
        for k in range(children):
            pending_at_fork.append(inherited.stats()["pending"])
            pid = _fork()
            if pid == 0:  # the child: report through the exit code, never return into pytest
                code = 1
                try:
                    code = _storm_child(k, inherited, per_child)
                finally:
                    os._exit(code)
            pids.append(pid)
        codes = _wait_children(pids, timeout=60)
        parent.join()
        assert [0] * children == codes
        assert [] == parent.errors
        assert [True] * parent_total == parent.results
        assert inherited.flush(15) and default.flush(15)
        expected = [(f"storm-c{k}", i) for k in range(children) for i in range(per_child)]
        expected += [("storm-parent", i) for i in range(parent_total)]
        tally.wait_for(expected, 30)
        parent_stats = inherited.stats()
        default_stats = default.get_notifier().stats()
    finally:
        default.shutdown()
    assert len(expected) == len(tally.by_id) == len(tally.copies)  # nothing extra, by anyone
    assert {1} == set(tally.keys.values())  # every (origin, seq) under one event_id
    assert 0 == tally.duplicates
    for stats in (parent_stats, default_stats):
        assert parent_total // 2 == stats["published"] == stats["accepted"]
        assert 0 == stats["dropped"]
        assert stats["thread_alive"] and os.getpid() == stats["pid"]
        assert_invariant(stats)
    assert sum(pending_at_fork) > 0  # the children did inherit queued events
    report(
        "fork_storm",
        children=children,
        events_per_child=per_child,
        parent_events=parent_total,
        delivered=len(tally.copies),
        expected=len(expected),
        duplicates=tally.duplicates,
        parent_events_pending_at_forks=sum(pending_at_fork),
        parent_worst_call_ms=ms(parent.worst()),
    )


def _wait_children(pids: list[int], timeout: float) -> list[int]:
    """Exit codes of ``pids``; children still running at the deadline are killed (code -9)."""
    codes: dict[int, int] = {}
    deadline = time.monotonic() + timeout

    def reap() -> bool:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        return len(codes) == len(pids)

    try:
        wait_until(reap, max(0.0, deadline - time.monotonic()), 0.02)
    except TimeoutError:
        for pid in pids:
            if pid not in codes:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                codes[pid] = -9
    return [codes[pid] for pid in pids]
