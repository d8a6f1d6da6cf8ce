"""A user's own Celery app for the lifecycle tests: its tasks never call the notifier, but for
``lc.crunch``, which reports progress in a tight loop, ``lc.die``, which flushes before it
kills itself, and ``lc.own_end``, which publishes its run's terminal event itself.

The app is configured as the tests' apps are (apps.celery_apps: the broker is the test's
Redis); the notifier the usual way ($NOTIFIER_CONFIG, $NOTIFIER_REDIS_URL). $LIFECYCLE_MODE picks
how the notifier is installed: "default", "off" (lifecycle=False), "keyed" (a channel_key that
uses the first argument) or "strict" (flush_on_task_end=True).
The tasks use Redis directly, only to tell the test what they are doing (a key per task id).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

import notifier
import notifier.celery

from apps.celery_apps import broker_url, celery_test_app

MODE = os.environ.get("LIFECYCLE_MODE", "default")

app = celery_test_app("lifecycle_app")


def first_argument(
    task_name: str, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> str | None:
    """The job id a caller passes first, when it passes one; else the Celery task id."""
    return str(args[0]) if args and task_name == "lc.job" else task_id


notifier.celery.install(
    app,
    None,
    lifecycle=MODE != "off",
    channel_key=first_argument if MODE == "keyed" else None,
    flush_on_task_end=MODE == "strict",
)
_marks = redis.Redis.from_url(broker_url())


def mark(task_id: str, what: str) -> None:
    _marks.set(f"lc-mark:{task_id}:{what}", repr(time.time()))


@app.task(name="lc.ok")
def ok(x: int) -> dict[str, Any]:
    return {"x": x, "items": [1, 2.5, "é", None, True]}


@app.task(name="lc.own_end", bind=True)
def own_end(self: Any) -> str:
    """Handles its own failure: publishes failed, then returns (the lifecycle must not add a
    completed after it)."""
    notifier.publish_failed(self.request.id, "the upstream said no; handled here")
    return "handled"


@app.task(name="lc.pair")
def pair() -> tuple[int, int]:
    return (1, 2)  # JSON would make it a list: sent as its repr


@app.task(name="lc.boom")
def boom() -> None:
    raise ValueError("échec du paiement ✗")


@app.task(name="lc.die", bind=True)
def die(self: Any) -> None:
    # Its started event is sent first: a SIGKILL loses what the process still has queued, and
    # what this task tests is the failed event that the worker's main process publishes.
    notifier.flush(30)
    mark(self.request.id, "dying")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="lc.die_now")
def die_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # at once: nothing of this run's is flushed


@app.task(name="lc.hang", bind=True, time_limit=1)
def hang(self: Any) -> None:
    mark(self.request.id, "running")
    time.sleep(60)


@app.task(name="lc.soft", bind=True, soft_time_limit=0.5)
def soft(self: Any) -> None:
    mark(self.request.id, "running")
    time.sleep(60)  # SoftTimeLimitExceeded is raised in here


@app.task(name="lc.wait", bind=True)
def wait(self: Any) -> None:
    mark(self.request.id, "running")
    time.sleep(60)


@app.task(name="lc.flaky", bind=True, max_retries=3)
def flaky(self: Any) -> str:
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError("the bank did not answer"), countdown=0.2)
    return "paid"


@app.task(name="lc.crunch", bind=True)
def crunch(self: Any, rows: int) -> float:
    """Progress for every row, as fast as it goes; returns how long the loop took."""
    started = time.monotonic()
    for row in range(1, rows + 1):
        notifier.publish_progress(self.request.id, row * 100 / rows, message=f"row {row}")
    return time.monotonic() - started


@app.task(name="lc.job")
def job(job_id: str) -> str:
    return f"done {job_id}"
