"""The outbox: the bounded buffer between callers and the notifier thread, and its doorbell.

Callers append events to a deque under the ledger's lock, which they hold anyway to count them;
the notifier thread takes them in bulk under the same lock. A janus queue is the doorbell: the
one thing that crosses from a caller's thread into the notifier's event loop. A caller rings it
only when the notifier thread has said it is going to sleep on it. While events flow, the thread
dozes instead (``sender``): it looks again after ``queue.linger`` by itself, and only a full
batch or ``nudge()`` -- a caller about to wait for its events, ``flush()`` -- rings it sooner.
So an event costs its caller one lock and an append, and the notifier thread one pop, where a
janus put and get would each take janus's own lock on top of the ledger's.

``maxsize`` bounds what waits here, not what the notifier thread has taken and not yet settled.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import janus

from notifier import native
from notifier.batch import Item

# How the notifier thread waits on the doorbell: not at all; dozing (a full batch and nudge()
# ring); asleep (every put rings).
AWAKE, DOZING, SLEEPING = 0, 1, 2


class Full(Exception):
    """The buffer holds ``maxsize`` events."""


class Closed(Exception):
    """The notifier thread has stopped taking events."""


class Outbox:
    """Events handed over and not yet taken. ``put``, ``evict``, ``take`` and ``size`` are
    called with the ledger's lock held (``lock``); the rest take it themselves."""

    def __init__(self, maxsize: int, lock: Any, burst: int) -> None:
        self.maxsize = maxsize
        # As many events as the notifier thread sends at once: a dozing thread is woken for them.
        self.burst = burst
        self._lock = lock
        self._items: deque[Item] = deque()
        self._closed = False
        # Dispatches the notifier thread took and has not settled (notifier.dispatch): they
        # count against maxsize, so that a dispatch that retries cannot let the queue grow.
        self.held = 0
        self._waiting = AWAKE  # how the notifier thread waits on the doorbell, if it does
        self._nudged = False  # nudged while busy: the next doze is skipped
        self._bell: janus.Queue[None] | None = None

    # Callers, with the lock ---------------------------------------------------------------

    def put(self, item: Item) -> None:
        """Append ``item``; Full or Closed when it cannot be."""
        if self._closed:
            raise Closed
        items = self._items
        if len(items) + self.held >= self.maxsize:
            raise Full
        items.append(item)
        waiting = self._waiting
        if waiting == SLEEPING or (waiting == DOZING and len(items) >= self.burst):
            self._waiting = AWAKE
            self._ring()

    def evict(self) -> Item:
        """Remove the oldest waiting event, to make room for a newer one (one waits)."""
        return self._items.popleft()

    def size(self) -> int:
        return len(self._items)

    # Any thread ---------------------------------------------------------------------------

    def nudge(self) -> None:
        """A caller is about to wait for the events that wait here: wake a dozing notifier thread
        now, or have a busy one skip its next doze."""
        with self._lock:
            if not self._items:
                return
            if self._waiting == AWAKE:
                self._nudged = True
                return
            self._waiting = AWAKE
            self._ring()

    def close(self) -> None:
        """Refuse new events; the notifier thread takes what is here, then stops."""
        with self._lock:
            self._closed = True
            self._waiting = AWAKE
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

    async def wait(self, doze: bool = False) -> None:
        """Until a caller puts an event, or the buffer is closed. With ``doze``, events gather
        instead: until a caller nudges it, ``burst`` events wait or it is closed. The caller
        bounds it with its own timeout."""
        bell = self._bell
        if bell is None:
            raise RuntimeError("Outbox.open() was not called")
        with self._lock:
            nudged, self._nudged = self._nudged, False
            if self._closed or nudged or len(self._items) >= (self.burst if doze else 1):
                return
            while True:  # a ring that came after the last wait timed out: not for this one
                try:
                    bell.async_q.get_nowait()
                except (janus.AsyncQueueEmpty, janus.AsyncQueueShutDown):
                    break
            self._waiting = DOZING if doze else SLEEPING
        try:
            await bell.async_q.get()
        except janus.AsyncQueueShutDown:
            pass
        finally:
            with self._lock:
                self._waiting = AWAKE

    def discard(self) -> None:
        """Close for good and empty the buffer (the ledger counts what was in it as pending)."""
        with self._lock:
            self._closed = True
            self._waiting = AWAKE
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
