"""``Subscriber``: one client's bounded buffer of entries, between its task's feed and transport.

The feed pushes (``feeds.py``); the client's transport waits and takes (``subscription.py``).
While an SSE transport waits with nothing left to send, it may lend the subscriber a ``Sink``:
the client's socket, which the feed's push then writes the entries' ready-made chunks to at once,
all that one read of the task's stream returned in one ``write()``, with no task switch: at
thousands of subscribers the wake-up of each one's coroutine cost more than the write
(``bench/gateway.py``). When the gateway falls behind, each read returns more entries, and each
write carries more of them. A socket that holds
unsent bytes, a terminal entry, or anything already buffered goes the usual way, through the
buffer and the transport's coroutine, so the order is kept and a slow client still fills its
bounded buffer. Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from notifier.gateway.entries import Entry


class Sink(Protocol):
    """A client's socket, lent while its transport waits."""

    def ready(self) -> bool:
        """Whether a chunk written now goes out at once (nothing else is waiting to)."""
        ...

    def write(self, chunk: bytes) -> None: ...


class Subscriber:
    """One client's bounded buffer. The feed pushes; the client's transport takes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queue: deque[Entry] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the transport, waiting for entries
        self.sink: Sink | None = None  # the client's socket, while the transport waits
        self.last: tuple[int, int] | None = None  # stream id of the last entry taken
        self.overflowed = False  # the buffer filled up: the client is too slow
        self.heartbeat_due = False  # set by the hub's ticker: a quiet stream says it is alive

    def push(self, entries: Sequence[Entry]) -> None:
        """Entries for this client, in order: written to its socket at once when it can take
        them, up to a terminal one; the rest buffered for its transport."""
        if self.overflowed:
            return
        sink = self.sink
        if sink is not None and not self.queue and sink.ready():
            chunks, written = [], 0
            for entry in entries:
                if entry.terminal:  # the transport ends the stream with it
                    break
                written += 1
                if self._is_new(entry):
                    chunks.append(entry.chunk)
            if chunks:
                sink.write(b"".join(chunks))
            entries = entries[written:]
            if not entries:
                return
        for entry in entries:
            if len(self.queue) >= self.limit:
                self.overflowed = True  # the transport disconnects it, saying why
                break
            self.queue.append(entry)
        self.wake()

    def wake(self) -> None:
        """Wake the transport if it waits (cheaper than an asyncio.Event: one waiter, at most
        one future per wait, made only when there was nothing to take)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, sink: Sink | None = None) -> None:
        """Until something is pushed, or ``wake()`` is called; ``sink`` takes what it can
        meanwhile."""
        if self.queue or self.overflowed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        self.sink = sink
        try:
            await self._waiter
        finally:
            self._waiter = None
            self.sink = None

    def take(self) -> list[Entry]:
        """What is buffered and new, in order: entries at or before ``last`` are skipped."""
        entries, self.queue = self.queue, deque()
        return [entry for entry in entries if self._is_new(entry)]

    def _is_new(self, entry: Entry) -> bool:
        """Whether the client has yet to get ``entry``; if so, it counts as the last one now."""
        if entry.stream_id is not None:
            if self.last is not None and entry.stream_id <= self.last:
                return False
            self.last = entry.stream_id
        return True
