"""The ways a Celery task can send a notification, each as ``setup(url) -> (send, close)``.

``send(task_id, payload_dict)`` is what the task's code would call. Every alternative publishes
the same JSON to the same channel of the same Redis, so their costs compare like for like; but
``floor``, which sends nothing: the least a hand-over can cost in Python, that every caller
figure is also read against.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
import redis.asyncio

from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, RedisConfig

Send = Callable[[str, dict[str, Any]], object]
Alternative = Callable[[str], tuple[Send, Callable[[], None]]]


def notifier_publish_failed(url: str, maxsize: int = 100_000) -> tuple[Send, Callable[[], None]]:
    """notifier.publish_failed: validate, encode, hand over; never waits for Redis."""
    n = Notifier(NotifierConfig(redis=RedisConfig(url=url), queue=QueueConfig(maxsize=maxsize)))
    n.start()
    error = TimeoutError("review service did not answer")

    def send(task_id: str, data: dict[str, Any]) -> object:
        return n.publish_failed(task_id, error, **data)

    return send, lambda: n.close(timeout=10)


def floor(url: str) -> tuple[Send, Callable[[], None]]:
    """Not a way to notify: the same event publish_failed makes, built as a dict, encoded by
    ``orjson.dumps`` and put on a ``queue.SimpleQueue`` in this process. Nothing is checked and
    nothing reaches Redis; it is the floor for a caller's hand-over in Python ("x floor")."""
    events: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    prefix, counter = os.urandom(8).hex(), itertools.count(1)
    error = TimeoutError("review service did not answer")

    def send(task_id: str, data: dict[str, Any]) -> object:
        event = {
            "event_id": f"{prefix}-{next(counter):x}",
            "type": "failed",
            "task_id": task_id,
            "timestamp": datetime.now(UTC),
            "data": {**data, "error": f"TimeoutError: {error}", "error_type": "TimeoutError"},
        }
        events.put(orjson.dumps(event, option=orjson.OPT_UTC_Z))
        return True

    return send, lambda: None


def sync_publish(url: str) -> tuple[Send, Callable[[], None]]:
    """redis-py's blocking publish() in the task: one round trip per notification."""
    client = redis.Redis.from_url(url, socket_timeout=2.0)

    def send(task_id: str, data: dict[str, Any]) -> object:
        return client.publish(f"task:{task_id}", json.dumps(data))

    return send, client.close


def run_async_wait_for(url: str) -> tuple[Send, Callable[[], None]]:
    """The original pattern: run_async(asyncio.wait_for(redis.publish(...), 5)) on the worker's
    loop. Here the client belongs to that same loop, so it works; the crash came when they
    differed."""
    loop = asyncio.new_event_loop()
    client = redis.asyncio.Redis.from_url(url, socket_timeout=2.0)

    def send(task_id: str, data: dict[str, Any]) -> object:
        return loop.run_until_complete(
            asyncio.wait_for(client.publish(f"task:{task_id}", json.dumps(data)), timeout=5)
        )

    def close() -> None:
        loop.run_until_complete(client.aclose())
        loop.close()

    return send, close


def asgiref_async_to_sync(url: str) -> tuple[Send, Callable[[], None]]:
    """Django Channels' way: async_to_sync around an async publish. Each call runs on a fresh
    event loop, so a client cannot be kept across calls ("Event loop is closed"); the correct
    version connects per call."""
    from asgiref.sync import async_to_sync

    async def publish(task_id: str, data: dict[str, Any]) -> object:
        async with redis.asyncio.Redis.from_url(url, socket_timeout=2.0) as client:
            return await client.publish(f"task:{task_id}", json.dumps(data))

    sync_publish = async_to_sync(publish)

    def send(task_id: str, data: dict[str, Any]) -> object:
        return sync_publish(task_id, data)

    return send, lambda: None


def socketio_write_only(url: str) -> tuple[Send, Callable[[], None]]:
    """python-socketio's RedisManager(write_only=True).emit(): pickles and publishes in the
    caller, blocking on Redis."""
    import socketio

    manager = socketio.RedisManager(url, write_only=True)

    def send(task_id: str, data: dict[str, Any]) -> object:
        return manager.emit("task_event", data, room=task_id, namespace="/")

    return send, lambda: None


ALTERNATIVES: dict[str, Alternative] = {
    "floor: dict, orjson.dumps, SimpleQueue.put": floor,
    "notifier.publish_failed": notifier_publish_failed,
    "redis-py sync publish": sync_publish,
    "run_async(wait_for(publish))": run_async_wait_for,
    "asgiref async_to_sync": asgiref_async_to_sync,
    "socketio write_only emit": socketio_write_only,
}
