"""Reading a task's events back, for a WebSocket gateway: its history first, then live.

Runs in the caller's own event loop with redis.asyncio; nothing here touches a notifier thread.
Each subscription has its own two connections (one for SUBSCRIBE, one for reading the stream).

Why nothing is lost or repeated when a subscriber switches from history to live:

1. SUBSCRIBE to the task's channel and wait for Redis to confirm it: from then on every PUBLISH
   on the channel reaches us.
2. Read the task's stream (XRANGE) and yield what it holds.
3. Yield live messages, skipping event ids already yielded.

An event published before step 1 is in the stream by step 2: the publisher sends each event's
XADD before its PUBLISH in the same pipeline. As a second line of defence (a publisher of an
older version, or another writer) the stream is read again, after the last entry read, when the
first live message arrives on a connection and whenever the channel has been quiet for
``check_interval``; an event whose live message was missed is then yielded late, never lost. A
dropped connection is replaced and the same three steps run again, resuming after the last event
yielded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from notifier.config import NotifierConfig
from notifier.config.loader import default_config
from notifier.config.redaction import describe, url_secrets
from notifier.consumer.clients import async_client
from notifier.consumer.connections import MESSAGES, Connections, entries_of
from notifier.events import check_task_id
from notifier.eventtypes import TERMINAL_TYPES
from notifier.link import TRANSPORT_ERRORS
from notifier.logs import Logger, get_logger
from notifier.naming import naming_for
from notifier.recent import Recent
from notifier.workflows import ids as workflows

Event = dict[str, Any]


def subscribe(
    task_id: str,
    *,
    redis_url: str | None = None,
    replay: bool = True,
    follow: bool = False,
    config: NotifierConfig | None = None,
    check_interval: float = 5.0,
    workflow: bool = False,
) -> AsyncGenerator[Event, None]:
    """The task's events as decoded dicts: its history (with ``replay``), then live ones.

    Each event is yielded once and in order, across the switch to live and across reconnects.
    Ends after the first terminal event (``completed``, ``failed``) unless ``follow``; close it
    with ``aclose()`` (or ``contextlib.aclosing``) to stop earlier and free its connections at
    once: after a ``break``, only garbage collection closes it. ``check_interval``: how long the
    channel may be quiet before the stream is read again and the connection is PINGed; a
    connection that stays silent for two intervals is replaced. Raises InvalidEvent here, at the
    call, for a malformed task id. ``workflow``: ``task_id`` is a workflow id, and the events
    are its workflow's (``notifier.workflows``).
    """
    task_id = _channel_id(task_id, workflow)
    if not check_interval > 0:
        raise ValueError(f"check_interval must be positive, got {check_interval!r}")
    cfg = _resolve(config, redis_url)
    return _subscription(_Reader(cfg, task_id, check_interval), replay=replay, follow=follow)


async def last_event(
    task_id: str,
    *,
    redis_url: str | None = None,
    config: NotifierConfig | None = None,
    workflow: bool = False,
) -> Event | None:
    """The task's latest event from its history (its workflow's, with ``workflow``), or None
    when it has none (or no history is kept). One attempt: a Redis that cannot be reached raises
    (RedisError, OSError, TimeoutError).
    """
    task_id = _channel_id(task_id, workflow)
    cfg = _resolve(config, redis_url)
    client = async_client(cfg.redis)
    try:
        async with asyncio.timeout(cfg.redis.connect_timeout + cfg.redis.publish_timeout):
            entries = await client.xrevrange(naming_for(cfg).key(task_id), count=1)
    finally:
        await client.aclose()
    for _entry_id, payload in entries_of(entries):
        return _decode(payload)
    return None


async def _subscription(
    reader: _Reader, *, replay: bool, follow: bool
) -> AsyncGenerator[Event, None]:
    """The loop behind subscribe(): one pair of connections at a time, replaced when one of
    them is lost."""
    attempt = 0
    try:
        while True:
            try:
                connections = await reader.connect()
                batch = await reader.start(connections, replay=replay)
                attempt = 0
                while True:
                    for event in batch:
                        yield event
                        if not follow and event.get("type") in TERMINAL_TYPES:
                            return
                    batch = await reader.next_batch(connections)
            except ResponseError:
                raise  # Redis refused a command (WRONGTYPE, NOPERM): no retry can fix it
            except TRANSPORT_ERRORS as exc:
                await reader.lost(exc, attempt)
                attempt += 1
    finally:
        await reader.disconnect()


class _Reader:
    """A subscription's state across its pairs of connections: what was yielded, and where the
    stream was last read. Used by one subscription, in one task, at a time."""

    def __init__(self, config: NotifierConfig, task_id: str, check_interval: float) -> None:
        self.config = config
        self.check_interval = check_interval
        naming = naming_for(config)
        self.sharded = naming.sharded
        self.channel = naming.channel(task_id).encode()
        self.key = naming.key(task_id).encode()
        self.log: Logger = get_logger(
            config.logging.level, redis_url=config.redis.safe_url, task_id=task_id
        )
        self._secrets = url_secrets(config.redis.url)
        # Event ids already yielded. A re-read returns only what the stream still holds, at most
        # the publishers' maxlen entries, so a bound with room to spare keeps out every repeat.
        self._seen: Recent[str, None] = Recent(max(2 * config.history.maxlen, 1024))
        self._last_entry: bytes | None = None  # stream id of the last entry read, if any
        self._connections: Connections | None = None
        self._started = False  # a pair has worked before: later ones resume, never skip
        self._dropped = False  # the last pair was lost: say so when a new one works

    async def connect(self) -> Connections:
        self._connections = await Connections.open(self.config.redis, self.channel, self.sharded)
        return self._connections

    async def start(self, connections: Connections, *, replay: bool) -> list[Event]:
        """The events the stream holds that were not yielded yet (none the first time, when
        not replaying: later reads then start after what the stream holds now)."""
        if self._dropped:
            self._dropped = False
            self.log.info("consumer_reconnected")
        if not self._started and not replay:
            self._last_entry = await connections.latest_id(self.key)
            self._started = True
            return []
        events = await self._read_stream(connections)
        self._started = True
        return events

    async def next_batch(self, connections: Connections) -> list[Event]:
        """Wait for the next live message; the new events it brings, in order, possibly none."""
        message = await connections.message(self.check_interval)
        kind = message.get("type")
        if kind is None:  # quiet for a whole interval
            if connections.pinged:
                raise RedisConnectionError(f"no answer to PING within {self.check_interval}s")
            connections.pinged = True
            await connections.ping()
            return await self._read_stream(connections)
        connections.pinged = False  # anything at all proves the connection alive
        if kind not in MESSAGES:
            return []  # a PONG, or a confirmation
        event = _decode(message.get("data"))
        if event is None:
            self.log.warning("consumer_bad_message", channel=self.channel.decode())
            return []
        if not connections.live_seen:
            connections.live_seen = True
            return [*await self._read_stream(connections), *self._new([event])]
        return self._new([event])

    async def lost(self, exc: BaseException, attempt: int) -> None:
        """Drop the pair and wait before the next one, doubling the wait up to the cap."""
        # The first failure of an outage is a warning; repeating it at every retry would flood.
        emit = self.log.warning if attempt == 0 else self.log.debug
        emit("consumer_disconnected", error=describe(exc, self._secrets), attempts=attempt + 1)
        self._dropped = True
        await self.disconnect()
        await asyncio.sleep(self.config.reconnect.delay(attempt))

    async def disconnect(self) -> None:
        connections, self._connections = self._connections, None
        if connections is not None:
            await connections.close()

    async def _read_stream(self, connections: Connections) -> list[Event]:
        """The stream's entries after the last one read, as new events, in stream order.
        Nothing is recorded until the whole read succeeded: a failed one is simply redone."""
        entries = await connections.entries(self.key, self._last_entry)
        if not entries:
            return []
        self._last_entry = entries[-1][0]
        events = []
        for _entry_id, payload in entries:
            event = _decode(payload)
            if event is None:
                self.log.warning("consumer_bad_message", key=self.key.decode())
            else:
                events.append(event)
        return self._new(events)

    def _new(self, events: list[Event]) -> list[Event]:
        """The events not yielded before, now counted as yielded (the caller yields them all)."""
        fresh = []
        for event in events:
            event_id = event["event_id"]
            if event_id in self._seen:
                continue
            self._seen.remember(event_id, None)
            fresh.append(event)
        return fresh


def _channel_id(task_id: str, workflow: bool) -> str:
    return workflows.channel_id(task_id) if workflow else check_task_id(task_id)


def _resolve(config: NotifierConfig | None, redis_url: str | None) -> NotifierConfig:
    cfg = default_config() if config is None else config
    return cfg if redis_url is None else replace(cfg, redis=replace(cfg.redis, url=redis_url))


def _decode(payload: object) -> Event | None:
    """A notifier event from its wire bytes; None for anything else (it is skipped)."""
    if not isinstance(payload, bytes):
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
        return None
    return event
