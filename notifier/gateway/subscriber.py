"""``Subscriber``: one client's bounded buffer of entries, between its task's feed and transport.

The feed pushes (``feeds.py``); the client's transport waits and takes (``subscription.py``).
Everything here runs in the gateway's own event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque

from notifier.gateway.entries import Entry


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
