"""One Redis pub/sub connection per gateway process, fanned out to every subscriber in it.

The hub SUBSCRIBEs to a task's channel when its first subscriber arrives and UNSUBSCRIBEs when
its last one leaves. A task's *feed* turns the channel's messages into entries of the task's
history stream, which carry the stream ids that browsers resume from: a message wakes the feed,
the feed reads the stream after the last entry it read (one XRANGE per wake-up and task, never
per subscriber), and hands each entry to every subscriber's bounded buffer. For a task whose
stream holds nothing (publishers without ``[history]``) a message is handed on as it came,
without an id. Once a task's events are in its stream, a message that the read after the last
entry does not return is one at or before that entry: it was handed on already, or it is in a
new subscriber's backlog, and is not handed on again.

A subscriber joins a feed first and reads its backlog second: what the feed hands it meanwhile
waits in its buffer, and anything it already has is skipped by stream id, so the switch from
history to live has neither a gap nor a repeat. When the pub/sub connection drops, the hub makes
a new one, subscribes again, and every feed reads its stream after its last entry: no gap either.
History reads go through a small pool of connections (``[gateway] history_connections``).

Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.aio import cancel_and_wait
from notifier.config import NotifierConfig
from notifier.events import TERMINAL_TYPES
from notifier.feed import PAGE, entries_of
from notifier.gateway.shards import Node, Shard
from notifier.logs import Logger
from notifier.redaction import describe, url_secrets
from notifier.topology.clients import async_client
from notifier.topology.naming import naming_for
from notifier.topology.urls import parse

CHECK_INTERVAL = 5.0  # a quiet feed reads its stream this often anyway: a lost message is late
RECENT_IDS = 1024  # event ids a feed remembers, to tell a message it already handed on


@dataclass(frozen=True, slots=True)
class Entry:
    """One event on its way to subscribers, encoded once for all of them."""

    stream_id: tuple[int, int] | None  # None: not in the history stream
    raw_id: bytes | None
    type: str
    payload: bytes  # the event's JSON, as published
    sse: bytes  # the whole Server-Sent Events frame
    terminal: bool  # the task's run ended with it: the stream ends after it


def parse_stream_id(raw: bytes | str | None) -> tuple[int, int] | None:
    """``b"1700000000000-3"`` as ``(1700000000000, 3)``; None for anything else."""
    if raw is None:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    ms, dash, seq = text.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit()):
        return None
    return int(ms), int(seq)


def make_entry(raw_id: bytes | None, payload: bytes, kind: str | None = None) -> Entry | None:
    """The entry for one event; None when the payload is not an event (it is skipped).
    ``kind`` names the SSE event when it is not the event's own type (``reset``)."""
    event = _decode(payload)
    if event is None and payload != b"null":
        return None
    own = str(event.get("type") or "message") if event is not None else ""
    kind = kind or own
    lines = [b"id: " + raw_id] if raw_id is not None else []
    lines.append(b"event: " + kind.encode())
    lines += [b"data: " + line for line in payload.split(b"\n")]
    frame = b"\n".join(lines) + b"\n\n"
    return Entry(parse_stream_id(raw_id), raw_id, kind, payload, frame, own in TERMINAL_TYPES)


def _decode(payload: bytes) -> dict[str, Any] | None:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


class Subscriber:
    """One client's bounded buffer. The feed pushes; the client's transport takes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queue: deque[Entry] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the transport, waiting for entries
        self.last: tuple[int, int] | None = None  # stream id of the last entry taken
        self.overflowed = False  # the buffer filled up: the client is too slow
        self.heartbeat_due = False  # set by the hub's ticker: a quiet stream says it is alive

    def push(self, entry: Entry) -> None:
        if self.overflowed:
            return
        if len(self.queue) >= self.limit:
            self.overflowed = True  # the transport disconnects it, saying why
        else:
            self.queue.append(entry)
        self.wake()

    def wake(self) -> None:
        """Wake the transport if it waits (cheaper than an asyncio.Event: one waiter, at most
        one future per wait, made only when there was nothing to take)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something is pushed, or ``wake()`` is called."""
        if self.queue or self.overflowed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> list[Entry]:
        """What is buffered and new, in order: entries at or before ``last`` are skipped."""
        entries, self.queue = self.queue, deque()
        out = []
        for entry in entries:
            if entry.stream_id is not None:
                if self.last is not None and entry.stream_id <= self.last:
                    continue
                self.last = entry.stream_id
            out.append(entry)
        return out


class Feed:
    """One task's channel: its subscribers, and where its stream was last read."""

    def __init__(self, hub: Hub, task_id: str) -> None:
        self.hub = hub
        self.task_id = task_id
        self.channel = hub.naming.channel(task_id).encode()
        self.key = hub.naming.key(task_id).encode()
        self.subscribers: set[Subscriber] = set()
        self.confirmed = asyncio.Event()  # Redis confirmed the SUBSCRIBE on this connection
        self.shard: Shard | None = None  # the pub/sub connection it is subscribed on
        self.last_id: bytes | None = None
        self.started = False  # last_id was set: reads go after it
        # The task's events are in its stream (its publishers keep history): then a message the
        # read after last_id did not return is at or before last_id, covered already.
        self.in_stream = False
        self._live: list[bytes] = []
        self._reading: asyncio.Task[None] | None = None
        self._again = False
        self._recent: OrderedDict[str, None] = OrderedDict()

    def wake(self, payload: bytes | None = None) -> None:
        """A message came (or the hub asks for a check): read the stream after last_id."""
        if payload is not None:
            self._live.append(payload)
        if self._reading is not None:
            self._again = True
            return
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                self._again = False
                live, self._live = self._live, []
                try:
                    entries = await self.hub.entries(self.key, self.last_id)
                except Exception as exc:  # noqa: BLE001 - a transport error, also uvloop's
                    # RuntimeError for a closed transport; the feed must go on either way.
                    self.hub.read_failed(exc)
                    # Nothing is handed on: the next wake-up (the subscription made again, or
                    # the hub's tick) reads the stream again, these messages' entries included.
                    self._live = live + self._live
                    return
                for raw_id, payload in entries:
                    self.last_id = raw_id
                    self.in_stream = True
                    self._hand_on(make_entry(raw_id, payload), payload)
                if not self.in_stream:  # no history: messages are all there is
                    for payload in live:
                        self._hand_on(None, payload)
                if not self._again:
                    return
        finally:
            self._reading = None

    def _hand_on(self, entry: Entry | None, payload: bytes) -> None:
        """Give an event to every subscriber once: by stream entry, or, for a message the stream
        did not hold, as it came."""
        event = _decode(payload)
        event_id = str(event.get("event_id")) if event is not None else None
        if event_id in self._recent:
            return  # handed on already: from the stream, or as it came
        if entry is None:
            entry = make_entry(None, payload)  # the stream does not hold it: no history
        if entry is None:
            return
        if event_id is not None:
            self._recent[event_id] = None
            if len(self._recent) > RECENT_IDS:
                self._recent.popitem(last=False)
        for subscriber in list(self.subscribers):
            subscriber.push(entry)


class Hub:
    """The gateway process's pub/sub connections (``notifier/gateway/shards.py``), its feeds,
    and its pool for history reads."""

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
        # History reads: a small pool, and never more reads at once than it holds.
        pool = config.gateway.history_connections
        self._reads = async_client(config.redis, max_connections=pool)
        self._read_slots = asyncio.Semaphore(pool)

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
                    feed.last_id = await self.latest_id(feed.key)
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
            cluster = self._reads
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
        if refresh and isinstance(self._reads, RedisCluster):
            with contextlib.suppress(Exception):  # a refresh that fails is tried at the next move
                await self._reads.nodes_manager.initialize()
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

    def lost(self, shard: Shard, exc: BaseException, attempt: int) -> None:
        emit = self.log.warning if attempt == 0 else self.log.debug
        emit(
            "gateway_redis_disconnected",
            error=self._describe(exc),
            attempts=attempt + 1,
            node=None if shard.node is None else f"{shard.node[0]}:{shard.node[1]}",
        )

    def open_failed(self, task_id: str, exc: BaseException, attempt: int) -> None:
        """A client's subscription could not be opened yet; it is tried again."""
        emit = self.log.warning if attempt == 0 else self.log.debug
        emit(
            "gateway_open_retrying",
            task_id=task_id,
            error=self._describe(exc),
            attempts=attempt + 1,
        )

    # History reads ---------------------------------------------------------------------------

    async def entries(
        self, key: bytes, after: bytes | None, start: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """``(stream id, payload)`` of the entries after ``after`` (from ``start`` inclusive, or
        the beginning, when None), in order, page by page."""
        out: list[tuple[bytes, bytes]] = []
        low = b"(" + after if after is not None else (start or b"-")
        while True:
            async with self._read_slots, asyncio.timeout(self.config.redis.publish_timeout):
                page = entries_of(await self._reads.xrange(key, min=low, count=PAGE))
            out += [(i, p) for i, p in page if p is not None]
            if len(page) < PAGE:
                return out
            low = b"(" + page[-1][0]

    async def latest_id(self, key: bytes) -> bytes | None:
        latest = await self.latest(key)
        return None if latest is None else latest[0]

    async def latest(self, key: bytes) -> tuple[bytes, bytes] | None:
        async with self._read_slots, asyncio.timeout(self.config.redis.publish_timeout):
            found = entries_of(await self._reads.xrevrange(key, count=1))
        return (found[0][0], found[0][1] or b"") if found else None

    async def entry_at(self, key: bytes, raw_id: bytes) -> bytes | None:
        """The payload of the entry with this exact id, or None when the stream lacks it."""
        async with self._read_slots, asyncio.timeout(self.config.redis.publish_timeout):
            found = entries_of(await self._reads.xrange(key, min=raw_id, max=raw_id, count=1))
        return (found[0][1] or b"null") if found else None

    def read_failed(self, exc: BaseException) -> None:
        self.log.warning("gateway_history_read_failed", error=self._describe(exc))

    # The pub/sub connection ------------------------------------------------------------------

    def _start(self) -> None:
        if self._ticker is None:
            loop = asyncio.get_running_loop()
            self._ticker = loop.create_task(self._tick())
            self._heartbeats = loop.create_task(self._beat())

    async def _tick(self) -> None:
        """Read every feed's stream now and then: a message lost on the way is late, never
        missing. The feeds are spread over the interval, not all read at once."""
        while True:
            feeds = list(self._feeds.values())
            for feed in feeds:
                await asyncio.sleep(CHECK_INTERVAL / max(1, len(feeds)))
                if feed.started:
                    feed.wake()
            if not feeds:
                await asyncio.sleep(CHECK_INTERVAL)

    async def _beat(self) -> None:
        """Wake every subscriber once per heartbeat interval: one timer for the process, not
        one per open stream. Feed by feed across the interval: ten thousand heartbeat writes at
        one moment would hold up the events behind them."""
        interval = self.config.gateway.heartbeat_interval
        while True:
            feeds = list(self._feeds.values())
            for feed in feeds:
                await asyncio.sleep(interval / max(1, len(feeds)))
                for subscriber in list(feed.subscribers):
                    subscriber.heartbeat_due = True
                    subscriber.wake()
            if not feeds:
                await asyncio.sleep(interval)

    async def close(self) -> None:
        for task in (self._ticker, self._heartbeats, *self._moves):
            await cancel_and_wait(task)
        self._ticker = self._heartbeats = None
        for shard in self._shards.values():
            await shard.close()
        self._shards.clear()
        await self._reads.aclose()

    def _describe(self, exc: BaseException) -> str:
        return describe(exc, self._secrets)
