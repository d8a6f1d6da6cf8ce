"""The Celery app `make bench-celery` runs on its workers: a trivial task and a 10 ms one.

Configured from the environment the bench sets: $BENCH_BROKER (broker and result backend) and
$BENCH_NOTIFIER ("1": ``notifier.celery.install(app)``, configured from $NOTIFIER_CONFIG; else
bare Celery). Celery's own task events (``-E``) are the worker's option, not the app's. The
two INFO lines Celery logs per task (received, succeeded) are off unless $BENCH_TASK_LOGS is
"1": at about half a millisecond a task, they would weigh more than what is measured, and a
worker logging at WARNING does not write them (the worker's "ready" line, which the bench waits
for, stays).
"""

from __future__ import annotations

import logging
import os
import time

from celery import Celery
from celery.signals import after_setup_logger

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
    # The bench checks that each worker runs the notifier it means to measure (--baseline).
    print(f"bench_notifier_imported {os.path.dirname(notifier.celery.__file__)}", flush=True)


@after_setup_logger.connect
def quiet_per_task_lines(**_: object) -> None:
    if os.environ.get("BENCH_TASK_LOGS") != "1":
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)


@app.task(name="bench.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="bench.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
