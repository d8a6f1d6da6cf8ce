"""The Celery app `make bench-celery` runs on its workers: a trivial task and a 10 ms one.

Configured from the environment the bench sets: $BENCH_BROKER (broker and result backend) and
$BENCH_NOTIFIER ("1": ``notifier.celery.install(app)``, configured from $NOTIFIER_CONFIG; else
bare Celery). Celery's own task events (``-E``) are the worker's option, not the app's.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("bench_celery", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    result_backend=app.conf.broker_url,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)

if os.environ.get("BENCH_NOTIFIER") == "1":
    import notifier.celery

    notifier.celery.install(app)


@app.task(name="bench.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="bench.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
