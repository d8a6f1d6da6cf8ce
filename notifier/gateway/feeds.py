"""``Feed``: one task's channel in the gateway, turning its messages into history stream entries.

A message wakes the feed, the feed reads the task's history stream after the last entry it read
(one XRANGE per wake-up and task, never per subscriber), and hands each entry to every
subscriber's bounded buffer, all that one read returned at once (to a waiting client's socket,
in one write); the entries carry the stream ids that browsers resume from. For a
task whose stream holds nothing (publishers without ``[history]``) a message is handed on as it
came, without an id. Once a task's events are in its stream, a message that the read after the
last entry does not return is one at or before that entry: it was handed on already, or it is in
a new subscriber's backlog, and is not handed on again.

A feed knows its owner (the hub) and its shard only through the two protocols below, so that
this module imports neither ``hub.py`` nor ``shards.py``.

Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from notifier.gateway.entries import Entry, Refused, decode_event, make_entry
from notifier.gateway.history import History
from notifier.gateway.subscriber import Subscriber
from notifier.naming import Naming
from notifier.recent import Recent

RECENT_IDS = 1024  # event ids a feed remembers, to tell a message it already handed on


class FeedOwner(Protocol):
    """What a feed needs from whoever keeps it (the hub): the task's names in Redis, the
    history reads, and where to say that a read failed or an entry was refused."""

    @property
    def naming(self) -> Naming: ...

    @property
    def history(self) -> History: ...

    def read_failed(self, exc: BaseException) -> None: ...

    def entry_refused(self, task_id: str, raw_id: bytes | None, reason: str) -> None: ...


class FeedShard(Protocol):
    """The pub/sub connection a feed's channel is subscribed on (``shards.Shard``)."""

    feeds: dict[bytes, Feed]

    def remove(self, feed: Feed) -> None: ...


class Feed:
    """One task's channel: its subscribers, and where its stream was last read."""

    def __init__(self, owner: FeedOwner, task_id: str) -> None:
        self.owner = owner
        self.task_id = task_id
        self.channel = owner.naming.channel(task_id).encode()
        self.key = owner.naming.key(task_id).encode()
        self.subscribers: set[Subscriber] = set()
        self.confirmed = asyncio.Event()  # Redis confirmed the SUBSCRIBE on this connection
        self.shard: FeedShard | None = None  # the pub/sub connection it is subscribed on
        self.last_id: bytes | None = None
        self.started = False  # last_id was set: reads go after it
        # The task's events are in its stream (its publishers keep history): then a message the
        # read after last_id did not return is at or before last_id, covered already.
        self.in_stream = False
        self._live: list[bytes] = []
        self._reading: asyncio.Task[None] | None = None
        self._again = False
        self._recent: Recent[str, None] = Recent(RECENT_IDS)

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
                    entries = await self.owner.history.entries(self.key, self.last_id)
                except Exception as exc:  # noqa: BLE001 - a transport error, also uvloop's
                    # RuntimeError for a closed transport; the feed must go on either way.
                    self.owner.read_failed(exc)
                    # Nothing is handed on: the next wake-up (the subscription made again, or
                    # the hub's tick) reads the stream again, these messages' entries included.
                    self._live = live + self._live
                    return
                new: list[Entry] = []
                for raw_id, payload in entries:
                    self.last_id = raw_id
                    self.in_stream = True
                    self._add_new(new, raw_id, payload)
                if not self.in_stream:  # no history: messages are all there is
                    for payload in live:
                        self._add_new(new, None, payload)
                if new:
                    for subscriber in list(self.subscribers):
                        subscriber.push(new)
                if not self._again:
                    return
        finally:
            self._reading = None

    def _add_new(self, new: list[Entry], raw_id: bytes | None, payload: bytes) -> None:
        """Add an event to what this read hands on, unless it was handed on already: by stream
        entry, or, for a message the stream did not hold (``raw_id`` None), as it came. One
        that ``make_entry`` refuses is skipped, and the owner told."""
        event = decode_event(payload)
        event_id = str(event.get("event_id")) if event is not None else None
        if event_id in self._recent:
            return  # handed on already: from the stream, or as it came
        entry = make_entry(raw_id, payload)
        if isinstance(entry, Refused):
            self.owner.entry_refused(self.task_id, raw_id, entry.reason)
            return
        if event_id is not None:
            self._recent.remember(event_id, None)
        new.append(entry)
