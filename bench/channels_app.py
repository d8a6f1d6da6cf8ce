"""The Celery app and the Django settings `make bench-channels` runs with, in the bench's own
process and on its prefork worker: one channels_redis core layer (alias ``default``) on the
bench's Redis ($BENCH_BROKER, also the broker and the result backend), configured with
``settings.configure``; the notifier installed for its drain at each child's exit
($NOTIFIER_CONFIG), without lifecycle events, which would add the same to both sides.

``bench.channels.send`` sends ``count`` messages to a Channels group from its ``except`` block,
one of two ways: ``async_to_sync`` (Channels' ``get_channel_layer().group_send``, as the
Channels docs show for code outside a consumer) or ``notifier`` (``notifier.channels.group_send``).
It times each call and catches what a call raises, and returns both."""

from __future__ import annotations

import os
import time
from typing import Any

import django
from asgiref.sync import async_to_sync
from celery import Celery
from channels.layers import get_channel_layer
from django.conf import settings

import notifier.celery
from notifier import channels

BROKER = os.environ["BENCH_BROKER"]
# Room for a whole batch in the reader's channel, for longer than a batch takes to read back
# (channels_redis's defaults are 100 messages and 60 s).
LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [BROKER], "capacity": 1_000_000, "expiry": 3600},
    }
}
if not settings.configured:
    settings.configure(CHANNEL_LAYERS=LAYERS, INSTALLED_APPS=[], USE_TZ=True)
    django.setup()

app = Celery("bench_channels", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
notifier.celery.install(app, None, lifecycle=False)


@app.task(name="bench.channels.send")
def send(way: str, group: str, first: int, count: int) -> dict[str, Any]:
    costs: list[int] = []
    errors: list[str] = []
    refused = 0
    try:
        raise ConnectionError("the payment service did not answer")
    except ConnectionError:
        for n in range(first, first + count):
            message = {"type": "progress.update", "n": n}
            began = time.perf_counter_ns()
            try:
                if way == "async_to_sync":
                    async_to_sync(get_channel_layer().group_send)(group, message)
                else:
                    refused += not channels.group_send(group, message)
            except Exception as exc:  # what the bench counts: any failure of the call
                errors.append(f"{n} {type(exc).__name__}: {exc}")
            costs.append(time.perf_counter_ns() - began)
    return {"costs_ns": costs, "errors": errors, "refused": refused, "pid": os.getpid()}
