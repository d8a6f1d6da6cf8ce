"""The hand-over: the caller's non-blocking put into the outbox, counted.

Every put holds ``ledger.lock``, so that the counters and what is in the outbox agree at every
moment (the ``ledger`` module says which equation holds). A full outbox refuses
(``drop_newest``) or makes room by evicting its oldest event (``drop_oldest``); either way the
call returns at once. With ``queue.progress_interval`` set, a task's progress event that finds
its previous one still waiting replaces it in place instead of queueing (``coalesce``).
"""

from __future__ import annotations

import time
from typing import cast

from notifier.batch import Item
from notifier.coalesce import Coalescer, Slot
from notifier.config import NotifierConfig
from notifier.dispatch import Dispatch
from notifier.events import describe_error
from notifier.eventtypes import TERMINAL_TYPES
from notifier.ledger import CLOSED, EVICTED, QUEUE_FULL, Ledger
from notifier.logs import Logger
from notifier.outbox import Closed, Full, Outbox
from notifier.workflows.steps import Member, Step

# What an event is to the outbox: sent as is, coalesced (progress), or the end of its task.
PLAIN, PROGRESS, TERMINAL = 0, 1, 2


class Handover:
    """Puts events into a notifier's outbox and counts each one, never waiting."""

    def __init__(
        self, config: NotifierConfig, ledger: Ledger, coalescer: Coalescer, log: Logger
    ) -> None:
        self._overflow_oldest = config.queue.overflow == "drop_oldest"
        self._coalescing = config.queue.progress_interval > 0
        self._ledger = ledger
        self._coalescer = coalescer
        self._log = log

    def kind(self, event_type: str) -> int:
        if event_type == "progress":
            return PROGRESS if self._coalescing else PLAIN
        return TERMINAL if event_type in TERMINAL_TYPES else PLAIN

    def offer(
        self,
        outbox: Outbox,
        task_id: str,
        payload: bytes | Step | Member | Dispatch,
        kind: int,
        open: bool,
    ) -> bool:
        """Put one event; True when accepted. ``open``: the notifier takes events (a progress
        event may then go into its task's waiting slot)."""
        ledger, coalescer = self._ledger, self._coalescer
        with ledger.lock:
            if kind == PROGRESS:
                event = cast(bytes | Step | Member, payload)  # progress: an event, no dispatch
                if open and coalescer.replace(task_id, event):
                    ledger.coalesce()  # the task's previous progress is still waiting: replaced
                    return True
                item: Item = (task_id, Slot(event))
            else:
                item = (task_id, payload)
            try:
                outbox.put(item)
                accepted, report = True, None
            except Closed:
                accepted, report = False, ledger.reject(CLOSED)
            except Full:
                # drop_oldest evicts a waiting event; a dispatch the notifier thread took holds
                # its place until it is settled, and is never evicted.
                accepted = self._overflow_oldest and outbox.size() > 0
                if accepted:
                    report = self._evict_oldest(outbox)
                    outbox.put(item)  # room is certain: every put holds ledger.lock
                else:
                    report = ledger.reject(QUEUE_FULL)
            if accepted:
                # In the same hold of the lock as the put: the notifier thread, which takes
                # events under it, sees the event and what it changed together.
                ledger.accepted += 1
                if kind == TERMINAL and (self._coalescing or coalescer.tracking):
                    coalescer.ended(task_id, time.monotonic())  # ends the task's progress
                elif kind == PROGRESS:
                    coalescer.register(task_id, item[1])  # type: ignore[arg-type]  # the Slot
        if report is not None:
            self._log.warning("notification_dropped", dropped_by_reason=report)
        return accepted

    def reject(self, reason: str) -> bool:
        """Count a call refused before it reached an outbox (the notifier is closed)."""
        with self._ledger.lock:
            report = self._ledger.reject(reason)
        if report is not None:
            self._log.warning("notification_dropped", dropped_by_reason=report)
        return False

    def refuse_invalid(self, exc: Exception) -> bool:
        """Count a publish_failed call whose arguments make no event; log why, now and then."""
        with self._ledger.lock:
            report = self._ledger.reject_invalid()
        if report is not None:
            reason, _ = describe_error(exc)
            self._log.error("notification_invalid", reason=reason, dropped_by_reason=report)
        return False

    def _evict_oldest(self, outbox: Outbox) -> dict[str, int] | None:
        """Make room for one event by dropping the oldest waiting one. Called with ledger.lock,
        when one waits."""
        task_id, data = outbox.evict()
        if isinstance(data, Slot):
            self._coalescer.take(task_id, data)  # no later progress may go into it
        return self._ledger.lose(EVICTED)
