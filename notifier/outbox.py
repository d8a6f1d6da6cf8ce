"""The outbox: the bounded buffer between callers and the notifier thread, and its doorbell.

Callers append events to a deque under the ledger's lock, which they hold anyway to count them;
the notifier thread takes them in bulk under the same lock. A janus queue is the doorbell: the
one thing that crosses from a caller's thread into the notifier's event loop. A caller rings it
only when the notifier thread has said it is going to sleep on it; while events flow, the thread
polls (``sender``) and nobody rings. So an event costs its caller one lock and an append, and
the notifier thread one pop, where a janus put and get would each take janus's own lock on top
of the ledger's.

``maxsize`` bounds what waits here, not what the notifier thread has taken and not yet settled.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import janus

from notifier import native
from notifier.batch import Item


class Full(Exception):
    """The buffer holds ``maxsize`` events."""


class Closed(Exception):
    """The notifier thread has stopped taking events."""


class Outbox:
    """Events handed over and not yet taken. ``put``, ``evict``, ``take`` and ``size`` are
    called with the ledger's lock held (``lock``); the rest take it themselves."""

    def __init__(self, maxsize: int, lock: Any) -> None:
        self.maxsize = maxsize
        self._lock = lock
        self._items: deque[Item] = deque()
        self._closed = False
        self._sleeping = False  # the notifier thread waits on the doorbell: ring it
        self._bell: janus.Queue[None] | None = None

    # Callers, with the lock ---------------------------------------------------------------

    def put(self, item: Item) -> None:
        """Append ``item``; Full or Closed when it cannot be."""
        if self._closed:
            raise Closed
        items = self._items
        if len(items) >= self.maxsize:
            raise Full
        items.append(item)
        if self._sleeping:
            self._sleeping = False
            self._ring()

    def evict(self) -> Item:
        """Remove the oldest event, to make room for a newer one (after Full: there is one)."""
        return self._items.popleft()

    def size(self) -> int:
        return len(self._items)

    # Any thread ---------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new events; the notifier thread takes what is here, then stops."""
        with self._lock:
            self._closed = True
            self._sleeping = False
            bell = self._bell
        if bell is not None:
            bell.shutdown()  # thread-safe: wakes the notifier thread if it waits

    # Notifier thread only -----------------------------------------------------------------

    def open(self) -> None:
        """Make the doorbell; on the notifier thread, in its loop (janus binds to it)."""
        bell: janus.Queue[None] = janus.Queue()
        native.adopt_queue_locks(bell)
        with self._lock:
            self._bell = bell
            if self._closed:  # closed before the thread was ready
                bell.shutdown()

    def take(self, limit: int) -> tuple[list[Item], bool]:
        """Up to ``limit`` events, oldest first, and whether the buffer is closed and now empty.
        Called with the lock held."""
        items = self._items
        if len(items) <= limit:
            taken = list(items)
            items.clear()
        else:
            pop = items.popleft
            taken = [pop() for _ in range(limit)]
        return taken, self._closed and not items

    async def wait(self) -> None:
        """Until a caller puts an event, or the buffer is closed. The caller bounds it with
        its own timeout."""
        bell = self._bell
        if bell is None:
            raise RuntimeError("Outbox.open() was not called")
        with self._lock:
            if self._items or self._closed:
                return
            while True:  # a ring that came after the last wait timed out: not for this one
                try:
                    bell.async_q.get_nowait()
                except (janus.AsyncQueueEmpty, janus.AsyncQueueShutDown):
                    break
            self._sleeping = True
        try:
            await bell.async_q.get()
        except janus.AsyncQueueShutDown:
            pass
        finally:
            with self._lock:
                self._sleeping = False

    def discard(self) -> None:
        """Close for good and empty the buffer (the ledger counts what was in it as pending)."""
        with self._lock:
            self._closed = True
            self._sleeping = False
            self._items.clear()
        if self._bell is not None:
            self._bell.close()

    async def wait_closed(self) -> None:
        if self._bell is not None:
            await self._bell.wait_closed()

    def _ring(self) -> None:
        bell = self._bell
        if bell is not None:
            bell.sync_q.put_nowait(None)
