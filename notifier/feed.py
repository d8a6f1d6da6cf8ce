"""A subscription's pair of Redis connections: SUBSCRIBE on one, stream reads on the other.

Used by ``notifier.consumer``, in the caller's own event loop. Every round trip is bounded by
``asyncio.timeout``; redis-py never retries on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from notifier.config import RedisConfig

# What a lost or unusable connection raises. ResponseError (a command Redis refused, such as
# WRONGTYPE) is a RedisError too, but retrying cannot fix it: the consumer raises it to the caller.
TRANSPORT_ERRORS = (RedisError, OSError, TimeoutError)
# Stream entries read per XRANGE round trip; the stream is capped by the publishers' maxlen.
PAGE = 500
# No silent retries inside redis-py: a reconnect it made on its own would resubscribe without
# reading the stream again, and the events published meanwhile would be lost.
NO_RETRY = Retry(NoBackoff(), 0, supported_errors=())


class Feed:
    """One pair of connections: the subscription on one, stream reads on the other."""

    def __init__(self, client: Redis, pubsub: PubSub, timeout: float) -> None:
        self.client = client
        self.pubsub = pubsub
        self.timeout = timeout  # bound on one command's round trip
        self.live_seen = False  # has a live message arrived on this feed yet?
        self.pinged = False  # is a PING unanswered?

    @classmethod
    async def open(cls, cfg: RedisConfig, channel: bytes) -> Feed:
        """Connect and SUBSCRIBE; returns once Redis has confirmed the subscription."""
        client = client_for(cfg)
        feed = cls(client, client.pubsub(), cfg.publish_timeout)
        try:
            async with asyncio.timeout(2 * cfg.connect_timeout):
                await feed.pubsub.subscribe(channel)
                # Nothing else can arrive before the confirmation; quiet reads just wait on.
                while (await feed.message(cfg.connect_timeout)).get("type") != "subscribe":
                    pass
        except BaseException:
            await feed.close()
            raise
        return feed

    async def message(self, timeout: float) -> dict[str, Any]:
        """The next message on the subscription, or {} after ``timeout`` of quiet."""
        message: dict[str, Any] | None = await self.pubsub.get_message(timeout=timeout)
        return message or {}

    async def entries(self, key: bytes, after: bytes | None) -> list[tuple[bytes, bytes | None]]:
        """``(stream id, payload)`` of every entry after ``after`` (all when None), in order."""
        entries: list[tuple[bytes, bytes | None]] = []
        while True:
            start = b"-" if after is None else b"(" + after
            async with asyncio.timeout(self.timeout):
                page = entries_of(await self.client.xrange(key, min=start, count=PAGE))
            entries += page
            if len(page) < PAGE:
                return entries
            after = page[-1][0]

    async def latest_id(self, key: bytes) -> bytes | None:
        async with asyncio.timeout(self.timeout):
            latest = entries_of(await self.client.xrevrange(key, count=1))
        return latest[0][0] if latest else None

    async def ping(self) -> None:
        """Send a PING on the subscription; its PONG comes back as a message."""
        async with asyncio.timeout(self.timeout):
            await self.pubsub.ping()

    async def close(self) -> None:
        """Close both connections; they are abandoned either way, so errors are not raised."""
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py: untyped
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self.client.aclose()


def client_for(cfg: RedisConfig) -> Redis:
    """A client (it connects on first use) that never retries and never times out on its own."""
    return Redis.from_url(
        cfg.url,
        socket_connect_timeout=cfg.connect_timeout,
        # No socket_timeout: with one, redis-py sends through asyncio.wait_for, which on Python
        # 3.11 can swallow a cancellation (CPython issue 86296) and leave a closed subscription
        # running. Every round trip here is bounded by asyncio.timeout instead.
        socket_timeout=None,
        retry=NO_RETRY,
        protocol=2,  # RESP2: no HELLO round trip; pub/sub messages are plain replies
    )


def entries_of(reply: Sequence[tuple[object, object]] | None) -> list[tuple[bytes, bytes | None]]:
    """XRANGE's reply as ``(entry id, payload)`` pairs; payload None without an ``event`` field."""
    entries = []
    for entry_id, fields in reply or ():
        payload = fields.get(b"event") if isinstance(fields, dict) else None
        if isinstance(entry_id, bytes):
            entries.append((entry_id, payload if isinstance(payload, bytes) else None))
    return entries
