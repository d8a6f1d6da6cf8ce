"""Progress coalescing: at most one ``progress`` event per task per ``queue.progress_interval``.

A task that reports progress in a tight loop should cost Redis and the browsers one message per
interval, carrying the latest value, not one per call. The caller's side and the notifier
thread's side share a *slot* per task:

- **Caller** (under the ledger's lock). A progress event for a task whose slot is still open
  replaces the slot's payload: no second queue item, and the replaced event is counted as
  ``coalesced``. Otherwise the event goes into the queue inside a new open slot.
- **Notifier thread.** When it takes a slot off the queue, it sends it if the task's interval
  since its last progress has passed, and otherwise holds it (``Gate``) until then. Callers keep
  replacing the payload of a held slot; the slot closes when it is sent, so what goes out is the
  latest value, at most one interval after it was published.
- **Terminal event** (``completed``, ``failed``, ``revoked``). It hurries the task's open slot:
  the slot goes out as soon as the notifier thread reaches it (held or still queued, it is ahead
  of the terminal event), inside the interval if need be. So a terminal event is never overtaken,
  and the task's last progress value is not lost; this is the one progress event that may come
  sooner than an interval after the previous one (the "+ 1" in "at most duration / interval + 2
  progress events per task").

A held slot may go out after a *non-terminal* event of its task that was published later (a
``waiting_review``, say): coalescing keeps the latest progress and the end of the stream exact,
not the order of progress against other kinds of events.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

from notifier.recent import Recent
from notifier.workflows.steps import Member, Step

RECENT_MAX = 4096  # per-task bookkeeping kept for this many tasks; tasks are short-lived


@dataclass(slots=True, eq=False)
class Slot:
    """A task's latest progress payload (a ``Member`` for a workflow's member), while it waits
    to be sent. ``urgent``: its task's terminal event follows, so it goes out at once (written
    and read under the ledger's lock)."""

    payload: bytes | Member | Step  # never a Step; typed so, the hand-over needs no cast
    urgent: bool = False


class Coalescer:
    """The open slots, and when each task last ended. Every method is called with the ledger's
    lock held, by callers and by the notifier thread."""

    def __init__(self, tracking: bool = False) -> None:
        self._open: dict[str, Slot] = {}
        self._ended: Recent[str, float] = Recent(RECENT_MAX)  # task id -> its last end's time
        # Whether _ended is kept (ended_since's answer): off until someone asks, since it costs
        # every terminal event a few dict operations (Notifier.track_endings).
        self.tracking = tracking

    def replace(self, task_id: str, payload: bytes | Member | Step) -> bool:
        """Put ``payload`` in the task's open slot; False when it has none."""
        slot = self._open.get(task_id)
        if slot is None:
            return False
        slot.payload = payload
        return True

    def register(self, task_id: str, slot: Slot) -> None:
        """``slot`` was just queued: the task's later progress goes into it while it is open."""
        self._open[task_id] = slot

    def ended(self, task_id: str, now: float) -> None:
        """The task's terminal event was accepted: its open slot, if any, must go out first,
        now. Called under the same hold of the lock as the terminal event's put, so that the
        notifier thread, which takes events under that lock, sees the slot marked by then."""
        slot = self._open.pop(task_id, None)
        if slot is not None:
            slot.urgent = True
        if self.tracking:
            self._ended.remember(task_id, now)

    def take(self, task_id: str, slot: Slot) -> bytes | Member | Step:
        """The slot's payload, taken to be sent (or evicted): no more replacements go into it."""
        if self._open.get(task_id) is slot:
            del self._open[task_id]
        return slot.payload

    def ended_since(self, task_id: str, since: float) -> bool:
        """Whether a terminal event of the task was accepted at or after ``since``."""
        at = self._ended.get(task_id)
        return at is not None and at >= since


class Gate:
    """When each task may send its next progress event, and the slots held until then.
    Notifier thread only."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last_sent: Recent[str, float] = Recent(RECENT_MAX)
        self._held: list[tuple[float, int, str, Slot]] = []
        self._order = itertools.count()

    def due(self, task_id: str) -> float:
        return self._last_sent.get(task_id, -math.inf) + self.interval

    def hold(self, task_id: str, slot: Slot, due: float) -> None:
        heapq.heappush(self._held, (due, next(self._order), task_id, slot))

    def sent(self, task_id: str, now: float) -> None:
        self._last_sent.remember(task_id, now)

    def ready(self, now: float) -> list[tuple[str, Slot]]:
        """The held slots whose time has come, in the order they fell due."""
        out = []
        while self._held and self._held[0][0] <= now:
            _, _, task_id, slot = heapq.heappop(self._held)
            out.append((task_id, slot))
        return out

    def urgent(self) -> list[tuple[str, Slot]]:
        """The held slots whose task's terminal event was queued since. Call with the ledger's
        lock held (``Slot.urgent`` is written under it)."""
        if not any(entry[3].urgent for entry in self._held):
            return []
        out = [(task_id, slot) for _, _, task_id, slot in sorted(self._held) if slot.urgent]
        self._held = [entry for entry in self._held if not entry[3].urgent]
        heapq.heapify(self._held)
        return out

    def release(self) -> list[tuple[str, Slot]]:
        """Every held slot, due or not: the notifier is closing and drains what it holds."""
        out = [(task_id, slot) for _, _, task_id, slot in sorted(self._held)]
        self._held.clear()
        return out

    def next_due(self) -> float | None:
        return self._held[0][0] if self._held else None

    @property
    def holding(self) -> int:
        return len(self._held)
