"""``Hub``: one Redis pub/sub connection per gateway process, fanned out to every subscriber in it.

The hub SUBSCRIBEs to a task's channel when its first subscriber arrives and UNSUBSCRIBEs when
its last one leaves. A task's *feed* (``feeds.py``) turns the channel's messages into entries of
the task's history stream, which carry the stream ids that browsers resume from, and hands them
to every subscriber's bounded buffer (``subscriber.py``). The connections are *shards*
(``shards.py``): one, or one per master of a Redis Cluster.

A subscriber joins a feed first and reads its backlog second: what the feed hands it meanwhile
waits in its buffer, and anything it already has is skipped by stream id, so the switch from
history to live has neither a gap nor a repeat. When the pub/sub connection drops, the hub makes
a new one, subscribes again, and every feed reads its stream after its last entry: no gap either.
History reads go through a small pool of connections (``history.py``,
``[gateway] history_connections``).

An outage of Redis makes two lines in the log, however many clients wait meanwhile: a warning
(``gateway_redis_unavailable``) at the first failure, whatever noticed it (the pub/sub
connection, a client's subscription, a read), and an info (``gateway_redis_available``) once
Redis answers again, which the hub watches for itself. The failures in between are debug.

The hub is what its feeds and shards call back (``feeds.FeedOwner``, ``shards.ShardOwner``);
they do not import it. Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.aio import cancel_and_wait
from notifier.config import NotifierConfig
from notifier.config.redaction import describe, url_secrets
from notifier.config.urls import parse
from notifier.gateway.feeds import Feed
from notifier.gateway.history import History
from notifier.gateway.shards import Node, Shard
from notifier.gateway.subscriber import Subscriber
from notifier.logs import Logger
from notifier.naming import naming_for
from notifier.recent import Recent

CHECK_INTERVAL = 5.0  # a quiet feed reads its stream this often anyway: a lost message is late
REFUSED_KEPT = 1024  # refused stream entries remembered, so that each is logged once


class Hub:
    """The gateway process's pub/sub connections (``shards.py``), its feeds (``feeds.py``),
    and its pool for history reads (``history.py``)."""

    def __init__(self, config: NotifierConfig, log: Logger) -> None:
        self.config = config
        self.log = log
        self._secrets = url_secrets(config.redis.url)
        self.naming = naming_for(config)
        self.topology = parse(config.redis.url)
        self._feeds: dict[str, Feed] = {}
        self._shards: dict[Node | None, Shard] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._moves: set[asyncio.Task[None]] = set()
        self._outage: asyncio.Task[None] | None = None  # watches for Redis to answer again
        self._closed = False
        self.history = History(config)
        self.entries_refused = 0  # stored entries and messages not framed (entries.Refused)
        self._refused: Recent[tuple[str, bytes], None] = Recent(REFUSED_KEPT)

    # Subscribers -----------------------------------------------------------------------------

    async def join(self, task_id: str, subscriber: Subscriber) -> Feed:
        """Add ``subscriber`` to the task's feed, once Redis has confirmed the subscription (so
        that nothing published from now on is missed). Raises TimeoutError when Redis cannot be
        reached in time."""
        self._start()
        feed = self._feeds.get(task_id)
        if feed is None:
            feed = self._feeds[task_id] = Feed(self, task_id)
        feed.subscribers.add(subscriber)
        try:
            async with asyncio.timeout(2 * self.config.redis.connect_timeout):
                if feed.shard is None:
                    (await self._shard_for(feed)).add(feed)
                await feed.confirmed.wait()
                if not feed.started:
                    feed.last_id = await self.history.latest_id(feed.key)
                    feed.in_stream = feed.in_stream or feed.last_id is not None
                    feed.started = True
        except BaseException:
            self.leave(feed, subscriber)
            raise
        return feed

    def leave(self, feed: Feed, subscriber: Subscriber) -> None:
        feed.subscribers.discard(subscriber)
        if not feed.subscribers and self._feeds.get(feed.task_id) is feed:
            del self._feeds[feed.task_id]
            if feed.shard is not None:
                feed.shard.remove(feed)

    @property
    def subscribers(self) -> int:
        return sum(len(feed.subscribers) for feed in self._feeds.values())

    # Where a feed subscribes -------------------------------------------------------------------

    async def _shard_for(self, feed: Feed) -> Shard:
        """The shard that owns the feed's channel: the one there is, or on a cluster the master
        of its slot (from the reads client's slot map)."""
        node: Node | None = None
        if self.naming.sharded:
            cluster = self.history.client
            assert isinstance(cluster, RedisCluster)  # noqa: S101 - naming.sharded says so
            if not cluster.nodes_manager.slots_cache:
                await cluster.initialize()
            owner = cluster.get_node_from_key(feed.channel.decode())
            if owner is None:
                raise RedisConnectionError(f"no node owns {feed.channel!r}'s slot")
            node = (owner.host, int(owner.port))
        shard = self._shards.get(node)
        if shard is None:
            shard = self._shards[node] = Shard(self, node)
        return shard

    def relocate_soon(self, feed: Feed) -> None:
        """A node gave the feed's slot away: subscribe where it lives now, then catch up."""
        task = asyncio.get_running_loop().create_task(self._relocate([feed], refresh=True))
        self._moves.add(task)
        task.add_done_callback(self._moves.discard)

    async def relocate_all(self, shard: Shard) -> None:
        """A cluster shard cannot connect: move its feeds if their slots have a new owner."""
        await self._relocate(list(shard.feeds.values()), refresh=True)

    async def _relocate(self, feeds: list[Feed], refresh: bool) -> None:
        reads = self.history.client
        if refresh and isinstance(reads, RedisCluster):
            with contextlib.suppress(Exception):  # a refresh that fails is tried at the next move
                await reads.nodes_manager.initialize()
        for feed in feeds:
            if self._feeds.get(feed.task_id) is not feed:
                continue  # its last subscriber left meanwhile
            try:
                target = await self._shard_for(feed)
            except Exception as exc:  # noqa: BLE001 - the next failure or tick tries again
                self.log.debug("gateway_relocate_failed", error=self._describe(exc))
                continue
            if target is not feed.shard:
                if feed.shard is not None:
                    feed.shard.feeds.pop(feed.channel, None)
                self.log.info(
                    "gateway_channel_moved", channel=feed.channel.decode(errors="replace")
                )
            target.add(feed)  # its confirmation makes it read what it missed

    # Timers, and closing ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._ticker is None:
            loop = asyncio.get_running_loop()
            self._ticker = loop.create_task(self._tick())
            self._heartbeats = loop.create_task(self._beat())

    async def _tick(self) -> None:
        """Read every feed's stream now and then: a message lost on the way is late, never
        missing. The feeds are spread over the interval, not all read at once."""
        await self._every_feed(CHECK_INTERVAL, _check)

    async def _beat(self) -> None:
        """Wake every subscriber once per heartbeat interval: one timer for the process, not
        one per open stream. Feed by feed across the interval: ten thousand heartbeat writes at
        one moment would hold up the events behind them."""
        await self._every_feed(self.config.gateway.heartbeat_interval, _heartbeat_due)

    async def _every_feed(self, interval: float, visit: Callable[[Feed], None]) -> None:
        """``visit`` each feed once per ``interval``, round after round, the visits spread
        evenly over it (the feeds of each round are those there were when it began; one that
        closes meanwhile is skipped, and its task id is all the round keeps of it)."""
        while True:
            task_ids = list(self._feeds)
            for task_id in task_ids:
                await asyncio.sleep(interval / max(1, len(task_ids)))
                feed = self._feeds.get(task_id)
                if feed is not None:
                    visit(feed)
            if not task_ids:
                await asyncio.sleep(interval)

    async def close(self) -> None:
        self._closed = True  # a read that fails now starts no watch
        for task in (self._ticker, self._heartbeats, self._outage, *self._moves):
            await cancel_and_wait(task)
        self._ticker = self._heartbeats = self._outage = None
        for shard in self._shards.values():
            await shard.close()
        self._shards.clear()
        await self.history.close()

    # Outages ---------------------------------------------------------------------------------

    async def probe(self) -> str | None:
        """Whether Redis answers now: None if it does, else what went wrong. One PING through
        the history pool (every master's, on a cluster), bounded like a read."""
        try:
            await self.history.ping()
        except Exception as exc:  # noqa: BLE001 - whatever it is, Redis did not answer
            return self._describe(exc)
        return None

    def lost(self, shard: Shard, exc: BaseException, attempt: int) -> None:
        """A shard's connection dropped or could not be made. One that carries no feed and
        failed before (a cluster master whose channels all moved away) is not an outage."""
        detail = {"attempts": attempt + 1, "node": shard.where()}
        if shard.feeds or attempt == 0:
            self._unavailable("gateway_redis_disconnected", "the pub/sub connection", exc, **detail)
        else:
            self.log.debug("gateway_redis_disconnected", error=self._describe(exc), **detail)

    def open_failed(self, task_id: str, exc: BaseException, attempt: int) -> None:
        """A client's subscription could not be opened yet; it is tried again."""
        self._unavailable(
            "gateway_open_retrying",
            "a client's subscription",
            exc,
            task_id=task_id,
            attempts=attempt + 1,
        )

    def read_failed(self, exc: BaseException) -> None:
        self._unavailable("gateway_history_read_failed", "a history read", exc)

    def _unavailable(self, event: str, what: str, exc: BaseException, **detail: Any) -> None:
        """Redis failed ``what`` (logged as ``event``). The first failure of an outage is a
        warning, and starts the watch that says when the outage is over; the failures until
        then are debug (a thousand clients waiting for Redis make one line, not a thousand)."""
        error = self._describe(exc)
        if self._outage is not None or self._closed:
            self.log.debug(event, error=error, **detail)
            return
        self.log.warning("gateway_redis_unavailable", error=error, failed=what, **detail)
        self._outage = asyncio.get_running_loop().create_task(self._watch(time.monotonic()))

    async def _watch(self, since: float) -> None:
        """Try Redis with the reconnect backoff until it answers, then say so: the next failure
        is a new outage."""
        attempt = 0
        while True:
            await asyncio.sleep(self.config.reconnect.delay(attempt))
            attempt += 1
            if await self._answers():
                break
        self._outage = None
        self.log.info("gateway_redis_available", outage_seconds=round(time.monotonic() - since, 3))

    async def _answers(self) -> bool:
        """Every pub/sub connection that carries feeds is up, and Redis answers a PING."""
        if not all(shard.connected for shard in self._shards.values() if shard.feeds):
            return False
        return await self.probe() is None

    def _describe(self, exc: BaseException) -> str:
        return describe(exc, self._secrets)

    # Entries not framed ----------------------------------------------------------------------

    def entry_refused(self, task_id: str, raw_id: bytes | None, reason: str) -> None:
        """A stored entry (or a message) that ``make_entry`` refused is skipped: logged and
        counted once, however many feeds and client backlogs read it."""
        if raw_id is not None:
            key = (task_id, raw_id)
            if key in self._refused:
                return  # logged already: another client's backlog holds it too
            self._refused.remember(key, None)
        self.entries_refused += 1
        self.log.warning(
            "gateway_entry_refused",
            task_id=task_id,
            stream_id=None if raw_id is None else ascii(raw_id)[2:-1],  # printable, unquoted
            reason=reason,
            refused=self.entries_refused,
        )


def _check(feed: Feed) -> None:
    """Read the feed's stream after its last entry, once it has one to read after."""
    if feed.started:
        feed.wake()


def _heartbeat_due(feed: Feed) -> None:
    """Tell each of the feed's subscribers that a heartbeat is due, and wake it to send one."""
    for subscriber in list(feed.subscribers):
        subscriber.heartbeat_due = True
        subscriber.wake()
