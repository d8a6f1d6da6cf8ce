"""The gateway's pub/sub connections: one per process, or one per cluster master.

A *shard* is one connection in pub/sub mode, with the task channels subscribed on it: to the
one node, to the master Sentinel names (asked again at every reconnect), or to one master of a
Redis Cluster, where channels are sharded (SSUBSCRIBE) and each lives on the master that owns
its slot. When a shard's connection drops it connects again and subscribes its channels anew;
every feed then reads its stream after its last entry, so nothing is missed meanwhile. A cluster
node that gives a slot away unsubscribes its channels unasked (``sunsubscribe``): the hub then
moves those feeds to the slot's new owner, and they read their streams the same way.

Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.aio import cancel_and_wait
from notifier.link import Link, command
from notifier.topology.base import TRANSPORT_ERRORS
from notifier.topology.sentinel import discover_master

if TYPE_CHECKING:
    from notifier.gateway.hub import Feed, Hub

Node = tuple[str, int]


class Shard:
    def __init__(self, hub: Hub, node: Node | None) -> None:
        self.hub = hub
        self.node = node  # a cluster master; None: the one node, or Sentinel's master
        self.feeds: dict[bytes, Feed] = {}
        sharded = hub.naming.sharded
        self._subscribe = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsubscribe = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        self._leaving: set[bytes] = set()  # channels we unsubscribed ourselves
        self._link: Link | None = None
        self._runner: asyncio.Task[None] | None = None

    def add(self, feed: Feed) -> None:
        """Subscribe ``feed``'s channel here (at once, or when the connection is made)."""
        self.feeds[feed.channel] = feed
        feed.shard = self
        feed.confirmed.clear()
        self._leaving.discard(feed.channel)
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        self._send_soon(command(self._subscribe, feed.channel))

    def remove(self, feed: Feed) -> None:
        if self.feeds.pop(feed.channel, None) is not None:
            self._leaving.add(feed.channel)
            self._send_soon(command(self._unsubscribe, feed.channel))

    def _send_soon(self, commands: bytes) -> None:
        if self._link is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: the link goes too
                asyncio.get_running_loop().create_task(self._send(commands))

    async def _send(self, commands: bytes) -> None:
        link = self._link
        if link is None:
            return  # not connected: _connect subscribes every feed when it connects
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
                self.hub.lost(self, exc, attempt)
            await self._disconnect()
            await asyncio.sleep(self.hub.config.reconnect.delay(attempt))
            attempt += 1
            if self.node is not None:
                await self.hub.relocate_all(self)  # the slots may have a new owner by now

    async def _connect(self) -> Link:
        cfg, topology = self.hub.config.redis, self.hub.topology
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
        self.hub.log.info("gateway_redis_connected", channels=len(self.feeds), node=self._where())
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
        elif kind == b"sunsubscribe" and isinstance(channel, bytes):
            if channel in self._leaving:
                self._leaving.discard(channel)
            elif feed is not None:  # unasked: the slot moved to another node
                self.hub.relocate_soon(feed)

    def _where(self) -> str | None:
        return None if self.node is None else f"{self.node[0]}:{self.node[1]}"

    async def _disconnect(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await link.close()

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        await cancel_and_wait(runner)
        await self._disconnect()
