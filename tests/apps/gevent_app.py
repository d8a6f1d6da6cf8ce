"""A user's Celery app for the gevent tests, run with ``celery worker -P gevent``: I/O-bound
tasks that sleep cooperatively and publish, and a greenlet that ticks every 10 ms and records
how late the hub runs it.

The app is configured as the tests' apps are (apps.celery_apps: the broker is the test's
Redis); the notifier is configured the usual way ($NOTIFIER_CONFIG).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import gevent
from celery import signals

import notifier
import notifier.celery
from notifier import native
from tasks import reports

from apps.celery_apps import celery_test_app

TICK = 0.01

app = celery_test_app("gevent_app")
notifier.celery.install(app)
_lateness: list[float] = []


def _tick() -> None:
    while True:
        began = time.perf_counter()
        gevent.sleep(TICK)
        _lateness.append(time.perf_counter() - began - TICK)


@signals.worker_ready.connect
def _start_ticking(**_: Any) -> None:
    gevent.spawn(_tick)


@signals.worker_init.connect
def _report_counters(**_: Any) -> None:
    reports.report_at_close(notifier.get_notifier())  # the worker's final counters, at exit


@app.task(name="gv.io")
def io(job: str, steps: int) -> int:
    """An I/O-bound task: a cooperative sleep, then a progress event, ``steps`` times."""
    for step in range(1, steps + 1):
        time.sleep(0.01)  # patched: other greenlets run meanwhile
        notifier.publish_progress(job, 100.0 * step / steps, step=step)
    return steps


@app.task(name="gv.burst")
def burst(job: str, rate: float, seconds: float) -> int:
    """Publish ``rate`` events/s for ``seconds`` (pacing every 10 ms); the calls accepted."""
    accepted, total = 0, int(rate * seconds)
    per_tick = max(1, int(rate * TICK))
    began = time.monotonic()
    for i in range(total):
        if i % per_tick == 0:
            ahead = began + i / rate - time.monotonic()
            gevent.sleep(max(0.0, ahead))  # yields to the hub every tick, like real I/O would
        accepted += notifier.publish(job, "tick", {"seq": i})
    return accepted


@app.task(name="gv.ticks")
def ticks(reset: bool = False) -> dict[str, Any]:
    """How late the ticking greenlet ran since the last reset, in ms; and where the notifier
    thread runs (a real OS thread, not the hub's)."""
    samples = sorted(_lateness)
    if reset:
        _lateness.clear()
    figures: dict[str, Any] = {"count": len(samples)}
    if samples:
        figures |= {
            "p50_ms": samples[len(samples) // 2] * 1000,
            "p99_ms": samples[int(len(samples) * 0.99)] * 1000,
            "max_ms": samples[-1] * 1000,
        }
    sender = notifier.get_notifier()._thread
    figures["notifier_thread_ident"] = None if sender is None else sender.ident
    figures["hub_thread_ident"] = native.get_ident()
    figures["threading_patched"] = native.gevent_patched()
    figures["os_threads"] = threading.active_count()
    figures["connected"] = notifier.get_notifier().stats()["connected"]
    return figures
