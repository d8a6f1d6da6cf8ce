"""Accounting for every event a notifier was handed.

One lock guards the counters *and* the outbox (``outbox``): callers hold it around
each put, the notifier thread around each take and each settle, so that at any moment::

    accepted == published + pending + coalesced + dropped after acceptance

where ``pending`` counts the events accepted and not yet settled (queued, or taken by the
notifier thread and not yet published or given up), and ``coalesced`` counts progress events
replaced by a later one of their task before they were sent (``coalesce``); they are
not drops. ``pending`` is not counted apart: it is what the other counters leave, so the equation
holds by construction and settling a whole batch is one update under the lock. Calls that
returned False are counted in ``rejected`` and in ``dropped`` too.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from notifier import native

# Reasons for an event refused at the call site (the publish call returned False).
QUEUE_FULL = "queue_full"
CLOSED = "closed"
INVALID = "invalid"  # publish_failed's arguments cannot make an event; it never raises
# Reasons for an event accepted and later given up.
EVICTED = "evicted"  # pushed out of a full queue by a newer event (overflow = "drop_oldest")
SHUTDOWN = "shutdown"  # still undelivered when close() ran out of time
REDIS_ERROR = "redis_error"  # Redis answered the command with an error
CRASHED = "crashed"  # the notifier thread died of a bug; logged as notifier_thread_crashed

DROP_REPORT_INTERVAL = 10.0


class Ledger:
    """Counters shared by callers and the notifier thread; every write happens under ``lock``."""

    def __init__(self) -> None:
        self.lock = native.Lock()  # a real lock, also under gevent: the notifier thread takes it
        self._settled = threading.Condition(self.lock)
        self._cooperative = native.gevent_patched()  # then flush() polls, letting greenlets run
        self._flush_waiters = 0  # flush() callers, and the wake-ups of when_settled()
        # when_settled(): (how many events must be settled, the wake-up to call then)
        self._wakeups: list[tuple[int, Callable[[], None]]] = []
        self.accepted = 0
        self.published = 0
        self.rejected = 0
        self.lost = 0  # accepted, then dropped
        self.coalesced = 0  # accepted, then replaced by a later progress event of its task
        self.resent = 0  # events sent again after a connection broke mid-batch
        self.dropped_by_reason: Counter[str] = Counter()
        # Written only by the notifier thread; single attribute stores, read without the lock.
        self.connected = False
        self.reconnects = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # wall time of last_error
        self.last_publish_at: float | None = None
        self.heartbeat_at: float | None = None  # wall time of the loop's last heartbeat
        self.loop_lag = 0.0  # how late the last heartbeat ran, in seconds
        # What the router reports of the topology (master in use, failovers, nodes); replaced
        # whole, never changed in place.
        self.topology: dict[str, Any] = {}
        # Rate limits for the notification_dropped warning and the notification_invalid error.
        self._drops = _Reports()
        self._invalid = _Reports()

    # Called with ``lock`` held, except settle() ----------------------------------------------

    def reject(self, reason: str) -> dict[str, int] | None:
        """Count a refused event. Returns the drops to log, at most once per interval."""
        self.rejected += 1
        return self._drop(reason, 1)

    def reject_invalid(self) -> dict[str, int] | None:
        """Count a publish_failed call whose arguments make no event; its own rate limit."""
        self.rejected += 1
        self.dropped_by_reason[INVALID] += 1
        return self._invalid.add(INVALID, 1)

    def coalesce(self) -> None:
        """Count an accepted progress event that a later one replaced before it was queued."""
        self.accepted += 1
        self.coalesced += 1

    def lose(self, reason: str, count: int = 1) -> dict[str, int] | None:
        """Count accepted events that will never be published; they are settled too, so a
        flush() waiting for them is woken."""
        self.lost += count
        if self._flush_waiters:
            self._wake_waiters()
        return self._drop(reason, count)

    def settle(self, failures: Sequence[bool]) -> None:
        """The notifier thread finished a batch: move its events from pending to published, or
        to lost when Redis answered with an error, then wake flush() callers.

        Counted before the lock is taken, so that the lock is held for a few additions whatever
        the batch's size. Called without the lock, on the notifier thread.
        """
        failed = failures.count(True)
        published = len(failures) - failed
        now = time.time() if published else None
        with self.lock:
            self.published += published
            if failed:
                self.lost += failed
                self.dropped_by_reason[REDIS_ERROR] += failed
            if now is not None:
                self.last_publish_at = now
            if self._flush_waiters:
                self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Wake the flush() callers, and call the wake-ups whose events are all settled now."""
        self._settled.notify_all()
        if not self._wakeups:
            return
        settled = self.published + self.lost + self.coalesced
        due = [wakeup for wakeup in self._wakeups if wakeup[0] <= settled]
        for wakeup in due:
            self._wakeups.remove(wakeup)
            self._flush_waiters -= 1
            wakeup[1]()

    def _drop(self, reason: str, count: int) -> dict[str, int] | None:
        self.dropped_by_reason[reason] += count
        return self._drops.add(reason, count)

    def note_error(self, error: str) -> None:
        """Record why the connection failed, and when. Notifier thread only; no lock needed."""
        self.last_error_at = time.time()
        self.last_error = error

    # Called without the lock ---------------------------------------------------------------

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every event accepted before the call is published or dropped."""
        if self._cooperative:
            with self.lock:
                target = self.accepted
            return native.wait_for(lambda: self._settled_up_to(target), max(0.0, timeout))
        deadline = time.monotonic() + max(0.0, timeout)
        with self.lock:
            target = self.accepted
            self._flush_waiters += 1
            try:
                while self.published + self.lost + self.coalesced < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._settled.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def when_settled(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` once every event accepted before this call is published or dropped;
        None when they already are (``wake`` is never called then). Otherwise returns a function
        that cancels the wake-up. ``wake`` runs on the notifier thread with ``lock`` held: it must
        only hand the news over (``loop.call_soon_threadsafe``), never block or take a lock."""
        with self.lock:
            target = self.accepted
            if self.published + self.lost + self.coalesced >= target:
                return None
            wakeup = (target, wake)
            self._wakeups.append(wakeup)
            self._flush_waiters += 1

        def cancel() -> None:
            with self.lock:
                if any(waiting is wakeup for waiting in self._wakeups):
                    self._wakeups.remove(wakeup)
                    self._flush_waiters -= 1

        return cancel

    def _settled_up_to(self, target: int) -> bool:
        with self.lock:
            return self.published + self.lost + self.coalesced >= target

    def pending(self) -> int:
        """Events accepted and not yet settled; call with ``lock`` held."""
        return self.accepted - self.published - self.lost - self.coalesced

    def snapshot(self) -> dict[str, Any]:
        """The counters as a dict; call with ``lock`` held, so that they agree."""
        return {
            "accepted": self.accepted,
            "published": self.published,
            "pending": self.pending(),
            "dropped": self.rejected + self.lost,
            "dropped_by_reason": dict(self.dropped_by_reason),
            "coalesced": self.coalesced,
            "rejected": self.rejected,
            "resent": self.resent,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "redis": self.topology,
            "last_publish_at": self.last_publish_at,
            "heartbeat_at": self.heartbeat_at,
            "loop_lag": self.loop_lag,
        }


class _Reports:
    """Counts not yet logged, released at most once per DROP_REPORT_INTERVAL: a log line per
    interval, not per event, however many events there are."""

    def __init__(self) -> None:
        self._unreported: Counter[str] = Counter()
        self._last = -math.inf

    def add(self, reason: str, count: int) -> dict[str, int] | None:
        self._unreported[reason] += count
        now = time.monotonic()
        if now - self._last < DROP_REPORT_INTERVAL:
            return None
        self._last = now
        report = dict(self._unreported)
        self._unreported.clear()
        return report
