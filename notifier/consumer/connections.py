"""A subscription's pair of Redis connections: SUBSCRIBE on one, stream reads on the other.

Used by ``notifier.consumer``, in the caller's own event loop. Every round trip is bounded by
``asyncio.timeout``; redis-py never retries on its own. On a Redis Cluster the subscription is
SSUBSCRIBE, on a plain connection to the master that owns the channel's slot (the cluster
client's slot map says which); a node that gives the slot away unsubscribes us unasked
(``sunsubscribe``), which counts as a lost connection, so the consumer subscribes again, on the
slot's new owner, and reads the stream after the last entry it had: no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.config import RedisConfig
from notifier.consumer.clients import AsyncClient, async_client, owner_client
from notifier.link import TRANSPORT_ERRORS

# Stream entries read per XRANGE round trip; the stream is capped by the publishers' maxlen.
PAGE = 500
# The messages a subscription receives, plain and sharded (Redis Cluster).
MESSAGES = ("message", "smessage")


class Connections:
    """One pair of connections: the subscription on one, stream reads on the other."""

    def __init__(self, client: AsyncClient, timeout: float, sharded: bool) -> None:
        self.client = client
        self.subscriber: Any = None  # on a cluster, the slot owner's own client
        self.pubsub: Any = None
        self.sharded = sharded
        self.timeout = timeout  # bound on one command's round trip
        self.live_seen = False  # has a live message arrived on this pair yet?
        self.pinged = False  # is a PING unanswered?

    @classmethod
    async def open(cls, cfg: RedisConfig, channel: bytes, sharded: bool = False) -> Connections:
        """Connect and SUBSCRIBE (SSUBSCRIBE on a cluster); returns once Redis has confirmed
        the subscription."""
        client = async_client(cfg)
        connections = cls(client, cfg.publish_timeout, sharded)
        confirmed = "ssubscribe" if sharded else "subscribe"
        try:
            if isinstance(client, RedisCluster):
                connections.subscriber = await owner_client(cfg, client, channel.decode())
                connections.pubsub = connections.subscriber.pubsub()
            else:
                connections.pubsub = client.pubsub()
            async with asyncio.timeout(2 * cfg.connect_timeout):
                if sharded:
                    await connections.pubsub.ssubscribe(channel)
                else:
                    await connections.pubsub.subscribe(channel)
                # Nothing else can arrive before the confirmation; quiet reads just wait on.
                while (await connections.message(cfg.connect_timeout)).get("type") != confirmed:
                    pass
        except BaseException:
            await connections.close()
            raise
        return connections

    async def message(self, timeout: float) -> dict[str, Any]:
        """The next message on the subscription, or {} after ``timeout`` of quiet. A
        ``sunsubscribe`` nobody asked for (the slot moved) raises, as a lost connection."""
        message: dict[str, Any] | None = await self.pubsub.get_message(timeout=timeout)
        if message is not None and message.get("type") == "sunsubscribe":
            raise RedisConnectionError("the node gave the channel's slot away (sunsubscribe)")
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
        for closable in (self.pubsub, self.subscriber, self.client):
            if closable is not None:
                with contextlib.suppress(*TRANSPORT_ERRORS):
                    await closable.aclose()


def entries_of(reply: Sequence[tuple[object, object]] | None) -> list[tuple[bytes, bytes | None]]:
    """XRANGE's reply as ``(entry id, payload)`` pairs; payload None without an ``event`` field."""
    entries = []
    for entry_id, fields in reply or ():
        payload = fields.get(b"event") if isinstance(fields, dict) else None
        if isinstance(entry_id, bytes):
            entries.append((entry_id, payload if isinstance(payload, bytes) else None))
    return entries
