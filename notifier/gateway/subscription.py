"""One client's view of one task: its backlog (after the last event id it has), then live.

Shared by the gateway's transports (SSE and WebSocket). Resuming is by stream entry id:

- no last event id: the whole history, then live events;
- an id the stream still holds: exactly the entries after it, then live: no gap, no repeat;
- an id the stream no longer holds (trimmed, expired, or never there): a ``reset`` entry comes
  first, carrying the latest event (``null`` when there is none), and live events follow it.

A subscription whose client already has the task's terminal event ``ended_before``: there is
nothing more to send (an SSE client is told so with 204, which stops its reconnecting).

Opening waits out a Redis that is briefly unavailable (a connection reset, a failover): it tries
again, with the reconnect backoff, for up to OPEN_PATIENCE seconds. Only then does the client get
an error, because an ``EventSource`` that is answered 503 gives up for good; and then at once,
whatever the attempt in flight was waiting for.
"""

from __future__ import annotations

import asyncio

from notifier.gateway.entries import Entry, Refused, as_chunk, make_entry, parse_stream_id
from notifier.gateway.feeds import Feed
from notifier.gateway.hub import Hub
from notifier.gateway.subscriber import Sink, Subscriber
from notifier.link import TRANSPORT_ERRORS

UNAVAILABLE = (*TRANSPORT_ERRORS, TimeoutError)  # Redis could not answer: worth another try
OPEN_PATIENCE = 5.0  # seconds a client's request waits for Redis before it is refused


class Subscription:
    def __init__(self, hub: Hub, task_id: str, limit: int) -> None:
        self.hub = hub
        self.task_id = task_id
        self.subscriber = Subscriber(limit)
        self.feed: Feed | None = None
        self.ended_before = False

    async def open(self, last_event_id: str | None) -> list[Entry]:
        """Join the task's feed, then read the backlog; the first entries to send. Raises
        TimeoutError (one of UNAVAILABLE) when Redis has not answered for OPEN_PATIENCE
        seconds: the deadline bounds the whole, an attempt in flight included."""
        attempt = 0
        async with asyncio.timeout(OPEN_PATIENCE):
            while True:
                try:
                    return await self._open(last_event_id)
                except UNAVAILABLE as exc:
                    self.hub.open_failed(self.task_id, exc, attempt)
                    await asyncio.sleep(self.hub.config.reconnect.delay(attempt))
                    attempt += 1

    async def _open(self, last_event_id: str | None) -> list[Entry]:
        self.feed = await self.hub.join(self.task_id, self.subscriber)
        key, first = self.feed.key, []
        after: bytes | None = None
        if last_event_id is not None:
            raw = last_event_id.strip().encode("ascii", "replace")
            held = await self.hub.history.entry_at(key, raw) if parse_stream_id(raw) else None
            if held is None:
                first.append(await self._reset(key))
                backlog: list[tuple[bytes, bytes]] = []
            else:
                self.subscriber.last = parse_stream_id(raw)
                entry = make_entry(raw, held)
                self.ended_before = isinstance(entry, Entry) and entry.terminal
                after = raw
        if after is not None or last_event_id is None:
            backlog = await self.hub.history.entries(key, after)
        entries: list[Entry] = []
        for raw_id, payload in backlog:
            entry = make_entry(raw_id, payload)
            if isinstance(entry, Refused):
                self.hub.entry_refused(self.task_id, raw_id, entry.reason)  # skipped
            else:
                entries.append(entry)
        # The backlog goes before what the feed handed on meanwhile; take() skips repeats.
        self.subscriber.queue.extendleft(reversed(entries))
        return first + self.subscriber.take()

    async def _reset(self, key: bytes) -> Entry:
        latest = await self.hub.history.latest(key)
        raw_id, payload = latest if latest is not None else (None, b"null")
        self.subscriber.last = parse_stream_id(raw_id)
        entry = make_entry(raw_id, payload or b"null", "reset")
        if isinstance(entry, Entry):
            return entry
        self.hub.entry_refused(self.task_id, raw_id, entry.reason)
        return _EMPTY_RESET  # the latest entry is not one to frame: the reset carries null

    async def next(self, sink: Sink | None = None) -> list[Entry] | None:
        """The next entries; None when there are none but a heartbeat is due (the hub says when:
        one timer for every stream of the process, not one each). ``sink``: the client's socket,
        which live entries are written to meanwhile where they can be (``subscriber.py``)."""
        subscriber = self.subscriber
        await subscriber.wait(sink)
        entries = subscriber.take()
        if not entries and subscriber.heartbeat_due:
            subscriber.heartbeat_due = False
            return None
        subscriber.heartbeat_due = False
        return entries

    @property
    def overflowed(self) -> bool:
        return self.subscriber.overflowed

    def close(self) -> None:
        if self.feed is not None:
            self.hub.leave(self.feed, self.subscriber)
            self.feed = None


_EMPTY_FRAME = b"event: reset\ndata: null\n\n"
_EMPTY_RESET = Entry(
    None, None, "reset", b"null", _EMPTY_FRAME, False, as_chunk(_EMPTY_FRAME), "null"
)
