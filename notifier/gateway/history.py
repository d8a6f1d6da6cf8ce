"""``History``: the gateway's reads of task history streams, through a small pool of connections.

``[gateway] history_connections`` sizes the pool, and never more reads are in flight at once than
it holds. Each read is bounded by ``[redis] publish_timeout``. On a Redis Cluster the pool's
client also holds the slot map that tells which master owns a channel (``hub.py``).

Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio

from notifier.config import NotifierConfig
from notifier.consumer.clients import AsyncClient, async_client
from notifier.consumer.connections import PAGE, entries_of


class History:
    """Reads of history streams: whole ranges page by page, the latest entry, one entry by id."""

    def __init__(self, config: NotifierConfig) -> None:
        pool = config.gateway.history_connections
        self.client: AsyncClient = async_client(config.redis, max_connections=pool)
        self._slots = asyncio.Semaphore(pool)
        self._timeout = config.redis.publish_timeout

    async def entries(
        self, key: bytes, after: bytes | None, start: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """``(stream id, payload)`` of the entries after ``after`` (from ``start`` inclusive, or
        the beginning, when None), in order, page by page."""
        out: list[tuple[bytes, bytes]] = []
        low = b"(" + after if after is not None else (start or b"-")
        while True:
            async with self._slots, asyncio.timeout(self._timeout):
                page = entries_of(await self.client.xrange(key, min=low, count=PAGE))
            out += [(i, p) for i, p in page if p is not None]
            if len(page) < PAGE:
                return out
            low = b"(" + page[-1][0]

    async def latest_id(self, key: bytes) -> bytes | None:
        latest = await self.latest(key)
        return None if latest is None else latest[0]

    async def latest(self, key: bytes) -> tuple[bytes, bytes] | None:
        async with self._slots, asyncio.timeout(self._timeout):
            found = entries_of(await self.client.xrevrange(key, count=1))
        return (found[0][0], found[0][1] or b"") if found else None

    async def entry_at(self, key: bytes, raw_id: bytes) -> bytes | None:
        """The payload of the entry with this exact id, or None when the stream lacks it."""
        async with self._slots, asyncio.timeout(self._timeout):
            found = entries_of(await self.client.xrange(key, min=raw_id, max=raw_id, count=1))
        return (found[0][1] or b"null") if found else None

    async def ping(self) -> None:
        """Raises unless Redis answers a PING (on a cluster, every master)."""
        async with self._slots, asyncio.timeout(self._timeout):
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
