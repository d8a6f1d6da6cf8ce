"""The gateway's pub/sub connections: one per process, or one per cluster master.

A *shard* is one connection in pub/sub mode, with the task channels subscribed on it: to the
one node, to the master Sentinel names (asked again at every reconnect), or to one master of a
Redis Cluster, where channels are sharded (SSUBSCRIBE) and each lives on the master that owns
its slot. When a shard's connection drops it connects again and subscribes its channels anew;
every feed then reads its stream after its last entry, so nothing is missed meanwhile. A cluster
node that gives a slot away unsubscribes its channels unasked (``sunsubscribe``): the hub then
moves those feeds to the slot's new owner, and they read their streams the same way.

A shard knows its owner (the hub) only through ``ShardOwner``, so that this module does not
import ``hub.py``; the feeds it carries are ``feeds.Feed``.

Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.aio import cancel_and_wait
from notifier.config import NotifierConfig
from notifier.config.urls import Topology
from notifier.gateway.feeds import Feed
from notifier.link import TRANSPORT_ERRORS, Link, command
from notifier.logs import Logger
from notifier.naming import Naming
from notifier.topology.sentinel import discover_master

Node = tuple[str, int]


class ShardOwner(Protocol):
    """What a shard needs from whoever keeps it (the hub): the configuration and where Redis
    is, and whom to tell that its connection dropped or that its feeds must move."""

    @property
    def config(self) -> NotifierConfig: ...

    @property
    def topology(self) -> Topology: ...

    @property
    def naming(self) -> Naming: ...

    @property
    def log(self) -> Logger: ...

    def lost(self, shard: Shard, exc: BaseException, attempt: int) -> None:
        """The shard's connection dropped or could not be made; ``attempt`` counts the failures
        in a row before this one."""

    async def relocate_all(self, shard: Shard) -> None:
        """A cluster shard cannot connect: move its feeds if their slots have a new owner."""

    def relocate_soon(self, feed: Feed) -> None:
        """The shard's node gave ``feed``'s slot away: subscribe it where it lives now."""


class Shard:
    def __init__(self, owner: ShardOwner, node: Node | None) -> None:
        self.owner = owner
        self.node = node  # a cluster master; None: the one node, or Sentinel's master
        self.feeds: dict[bytes, Feed] = {}
        sharded = owner.naming.sharded
        self._subscribe = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsubscribe = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        # Per channel, the unsubscribes sent on this connection that Redis has not answered yet:
        # a reply beyond them is one we did not ask for. A closed connection answers none, so it
        # is emptied with it; it never holds more than the channels on their way out.
        self._leaving: dict[bytes, int] = {}
        self._link: Link | None = None
        self._runner: asyncio.Task[None] | None = None

    def add(self, feed: Feed) -> None:
        """Subscribe ``feed``'s channel here (at once, or when the connection is made)."""
        self.feeds[feed.channel] = feed
        feed.shard = self
        feed.confirmed.clear()
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        self._send_soon(command(self._subscribe, feed.channel))

    def remove(self, feed: Feed) -> None:
        channel = feed.channel
        if self.feeds.pop(channel, None) is not None and self._link is not None:
            self._leaving[channel] = self._leaving.get(channel, 0) + 1
            self._send_soon(command(self._unsubscribe, channel))

    def _send_soon(self, commands: bytes) -> None:
        """Send on the connection there is now; not connected, nothing: ``_connect`` subscribes
        every feed when it connects."""
        link = self._link
        if link is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: the link goes too
                asyncio.get_running_loop().create_task(self._send(link, commands))

    async def _send(self, link: Link, commands: bytes) -> None:
        if link is not self._link:
            return  # that connection is gone: the next one subscribed what is wanted now
        try:
            await link.send(commands)
        except (*TRANSPORT_ERRORS, RuntimeError):  # uvloop: RuntimeError on a closed transport
            await link.close()  # _run notices and connects again

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                link = await self._connect()
                attempt = 0
                while True:
                    for reply in await link.replies():
                        self._dispatch(reply)
            except Exception as exc:  # noqa: BLE001 - transport errors, and uvloop's
                # RuntimeError on a closed transport: the connection must come back.
                self.owner.lost(self, exc, attempt)
            await self._disconnect()
            await asyncio.sleep(self.owner.config.reconnect.delay(attempt))
            attempt += 1
            if self.node is not None:
                await self.owner.relocate_all(self)  # the slots may have a new owner by now

    async def _connect(self) -> Link:
        cfg, topology = self.owner.config.redis, self.owner.topology
        if self.node is not None:
            url = topology.node_url(*self.node)
        elif topology.kind == "sentinel":  # the master the sentinels name now
            named = await discover_master(topology, cfg.connect_timeout)
            if named is None:
                raise RedisConnectionError("no sentinel named a master")
            url = topology.node_url(*named)
        else:
            url = cfg.url
        async with asyncio.timeout(cfg.connect_timeout):
            link = await Link.open(url, cfg.connect_timeout)
        self._link = link
        for feed in self.feeds.values():
            feed.confirmed.clear()
        if self.feeds:
            await link.send(b"".join(command(self._subscribe, c) for c in self.feeds))
        self.owner.log.debug("gateway_redis_connected", channels=len(self.feeds), node=self.where())
        return link

    def _dispatch(self, reply: object) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel, data = reply[0], reply[1], reply[2]
        feed = self.feeds.get(channel) if isinstance(channel, bytes) else None
        if kind in (b"message", b"smessage") and feed is not None and isinstance(data, bytes):
            feed.wake(data)
        elif kind in (b"subscribe", b"ssubscribe") and feed is not None:
            feed.confirmed.set()
            if feed.started:
                feed.wake()  # subscribed again after a reconnect or a move: read what was missed
        elif kind in (b"unsubscribe", b"sunsubscribe") and isinstance(channel, bytes):
            ours = self._answered(channel)
            # One we did not ask for: a node never drops a plain subscription by itself; a
            # cluster node drops a sharded one when it gives the channel's slot away.
            if not ours and kind == b"sunsubscribe" and feed is not None:
                self.owner.relocate_soon(feed)

    def _answered(self, channel: bytes) -> bool:
        """Whether an unsubscribe reply for ``channel`` answers one we sent (Redis answers in
        order, so the oldest unanswered one); forget it then."""
        pending = self._leaving.get(channel, 0)
        if pending > 1:
            self._leaving[channel] = pending - 1
        elif pending == 1:
            del self._leaving[channel]
        return pending > 0

    @property
    def connected(self) -> bool:
        """Its connection is made (and Redis answered its PING)."""
        return self._link is not None

    def where(self) -> str | None:
        """``host:port`` of its cluster master; None for the one node or Sentinel's master."""
        return None if self.node is None else f"{self.node[0]}:{self.node[1]}"

    async def _disconnect(self) -> None:
        link, self._link = self._link, None
        self._leaving.clear()  # that connection will answer none of them
        if link is not None:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await link.close()

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        await cancel_and_wait(runner)
        await self._disconnect()
