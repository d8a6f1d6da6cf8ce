"""The Celery app `make bench-workflows` runs on a real worker: one small task that reports its
progress once, as a typical task does, with the notifier installed the usual way (lifecycle on;
$NOTIFIER_CONFIG, $NOTIFIER_REDIS_URL). The broker and result backend are $BENCH_BROKER."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import notifier
import notifier.celery

app = Celery(
    "bench_workflows", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"]
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    task_default_queue=os.environ.get("BENCH_QUEUE", "celery"),
)
notifier.celery.install(app, None)


@app.task(name="bench.tick", bind=True)
def tick(self: Any, i: int) -> int:
    notifier.publish_progress(self.request.id, 50, message="half way")
    return i
