"""The notifier thread: its own event loop, its own Redis connections.

Everything in this module runs on the notifier thread, except the three hand-over points the
publisher uses from other threads: ``ready`` (a native.Event), ``request_stop()`` and
``force_stop()``. The loop, the outbox's doorbell (``outbox``) and the router (which
owns the Redis connections: ``notifier.topology``) are created here and never touched from
anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence

from notifier import native
from notifier.aio import cancel_and_wait
from notifier.batch import Item, Outgoing
from notifier.coalesce import Coalescer, Gate, Slot
from notifier.config import NotifierConfig
from notifier.dispatch import Dispatch, Dispatcher
from notifier.ledger import CRASHED, SHUTDOWN, Ledger
from notifier.logs import Logger
from notifier.outbox import Outbox
from notifier.topology.routers import make_router
from notifier.workflows.steps import Member, Step

# How long after the last event the sender keeps dozing (queue.linger) before it sleeps on its
# doorbell instead (see Sender._pump).
ACTIVE_WINDOW = 0.1


class Sender:
    """Takes batches from the outbox and publishes them, reconnecting until they are delivered."""

    def __init__(
        self,
        config: NotifierConfig,
        ledger: Ledger,
        coalescer: Coalescer,
        outbox: Outbox,
        log: Logger,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.ledger = ledger
        self.coalescer = coalescer
        interval = config.queue.progress_interval
        self._gate = Gate(interval) if interval > 0 else None
        self._linger = config.queue.linger
        self.log = log
        self.ready = native.Event()
        # Called on the notifier thread with the loop's lag at every heartbeat (health snapshots).
        self.tick_listeners: list[Callable[[float], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self.router = make_router(config, ledger, log)
        # Messages for other systems (notifier.dispatch), sent beside the Redis batches.
        self.dispatcher = Dispatcher(config, ledger, log, self._hold)

    # Thread entry point and the hand-over points used from other threads ----------------------

    def run(self) -> None:
        """The notifier thread's body: its own event loop (under gevent, one that never touches
        gevent's patched selectors: ``native``)."""
        with asyncio.Runner(loop_factory=native.loop_factory()) as runner:
            runner.run(self._run())

    def request_stop(self) -> None:
        """Refuse new events, deliver what is queued, then end the thread. Any thread."""
        self.outbox.close()  # thread-safe; wakes the sender, which stops once it is empty

    def force_stop(self) -> None:
        """Give up delivering: what is left is counted as dropped (``shutdown``). Any thread."""
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            # RuntimeError: the loop already closed, the thread is on its way out.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)

    # Notifier thread only -------------------------------------------------------------------

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self.outbox.open()
        heartbeat = asyncio.create_task(self._heartbeat())
        self.ready.set()
        reason = SHUTDOWN
        try:
            await self._pump()
        except asyncio.CancelledError:
            pass  # force_stop(): the deadline passed
        except Exception:
            reason = CRASHED
            self.log.exception("notifier_thread_crashed")
        finally:
            self._drop_remaining(reason)  # first: no await may come before the count
            await cancel_and_wait(heartbeat)
            await self.dispatcher.close()  # on this loop, which its resources are bound to
            await self.router.close()
            await self.outbox.wait_closed()

    async def _heartbeat(self) -> None:
        """Prove, every heartbeat_interval, that this loop still runs, and measure how late it
        runs. A blocked loop or a dead thread stops the heartbeat: that is what health checks see.
        """
        loop = asyncio.get_running_loop()
        interval = self.config.health.heartbeat_interval
        due = loop.time()
        while True:
            lag = max(0.0, loop.time() - due)
            self.ledger.loop_lag = lag
            self.ledger.heartbeat_at = time.time()
            for listener in self.tick_listeners:
                try:
                    listener(lag)
                except Exception:  # a broken listener must not stop the heartbeat
                    self.log.exception("notifier_heartbeat_listener_failed")
            due = loop.time() + interval
            await asyncio.sleep(interval)

    async def _pump(self) -> None:
        """Take batches from the outbox and deliver them, until it is closed and empty.

        While events flow, the sender sends at most one batch per ``queue.linger`` and dozes in
        between: the events of the interval gather into the next batch. Each wake-up of a thread
        costs tens of microseconds of CPU on a virtual machine, and a sleeping sender would be
        woken by every put() (through its loop's self-pipe), so one wake-up and one round trip
        for many events is most of what publishing saves. A dozing sender is woken early only by
        a full batch or by a caller about to wait for its events (``flush()``, ``Outbox.nudge``).
        After ACTIVE_WINDOW without events it sleeps on the outbox's doorbell, which any put()
        rings: an idle process costs nothing, and the first event after a quiet spell goes at once.
        """
        loop = asyncio.get_running_loop()
        await self.router.probe()  # connect now, not at the first event: health shows it early
        last_event = -math.inf
        while True:
            with self.ledger.lock:
                taken, closed = self.outbox.take(self.config.queue.batch_size)
            batch = self._admit(taken, drain=closed)
            if not batch:
                if closed:
                    await self.dispatcher.idle()
                    return  # closed, drained, nothing held, every dispatch settled
                if taken:  # dispatches only
                    last_event = loop.time()
                dozing = self._linger > 0 and loop.time() - last_event < ACTIVE_WINDOW
                await self._wait(self._linger if dozing else None)
                continue
            last_event = sent = loop.time()
            await self._deliver(batch)
            # The next batch gathers for the rest of the interval.
            await self._wait(self._linger - (loop.time() - sent))

    async def _wait(self, linger: float | None) -> None:
        """Doze for up to ``linger`` seconds, or with None sleep until the next event for up to a
        heartbeat interval (then check the connection); either way no later than the first held
        progress slot falls due."""
        doze = linger is not None
        if linger is None:
            wait = self.config.health.heartbeat_interval
        elif linger > 0:
            wait = linger
        else:
            return
        due = None if self._gate is None else self._gate.next_due()
        if due is not None:
            wait = max(0.0, min(wait, due - time.monotonic()))
        try:
            async with asyncio.timeout(wait):
                await self.outbox.wait(doze)
        except TimeoutError:
            if due is None and not doze:
                await self.router.probe()

    def _admit(self, taken: list[Item], drain: bool) -> list[Outgoing]:
        """The events to send now: encoded events as they are; progress slots whose task may
        send again; held slots that fell due (every one, when draining). A slot taken too soon
        after its task's last progress is held, and keeps taking its task's newer progress."""
        gate = self._gate
        if gate is None or (not gate.holding and not _has_slot(taken)):
            return _expanded(taken, self.dispatcher)  # no coalescing, or no slot to decide on
        now, lock = time.monotonic(), self.ledger.lock
        batch: list[Outgoing] = []
        if gate.holding:
            # Held slots whose task's terminal event was queued since: they were taken before
            # anything taken now, so they go first.
            with lock:
                for task_id, slot in gate.urgent():
                    self._send_slot(task_id, slot, now, batch)
        for task_id, data in taken:
            if not isinstance(data, Slot):
                _add(batch, task_id, data, self.dispatcher)
                continue
            due = gate.due(task_id)
            with lock:  # Slot.urgent and the open slots are written by callers under it
                if due > now and not drain and not data.urgent:
                    gate.hold(task_id, data, due)
                else:
                    self._send_slot(task_id, data, now, batch)
        ready = gate.release() if drain else gate.ready(now)
        if ready:
            with lock:
                for task_id, slot in ready:
                    self._send_slot(task_id, slot, now, batch)
        return batch

    def _send_slot(self, task_id: str, slot: Slot, now: float, batch: list[Outgoing]) -> None:
        """Send this slot's latest progress: into ``batch``. Called with the ledger's lock."""
        _add(batch, task_id, self.coalescer.take(task_id, slot), self.dispatcher)
        if self._gate is not None:
            self._gate.sent(task_id, now)

    async def _deliver(self, batch: Sequence[Outgoing]) -> None:
        """Publish the batch, sending again what did not get through, as often as it takes
        (at least once delivery). Which connection an event goes to is the router's business."""
        pending, attempt = list(batch), 0
        while True:
            result = await self.router.send(pending)
            if result.settled:
                # A member's step is its event's side effect (Member.events): not counted apart.
                failures = [
                    failed
                    for (_, data), failed in result.settled
                    if type(data) is not Step or not data.derived
                ]
                self.ledger.settle(failures)
            if not result.retry:
                return
            with self.ledger.lock:
                self.ledger.resent += sum(
                    1 for _, data in result.retry if type(data) is not Step or not data.derived
                )
            pending = result.retry
            await asyncio.sleep(self.config.reconnect.delay(attempt))
            attempt += 1

    def _hold(self, count: int) -> None:
        """Dispatches taken (count > 0) or settled hold their places in the outbox meanwhile."""
        with self.ledger.lock:
            self.outbox.held += count

    def _drop_remaining(self, reason: str) -> None:
        """Close the outbox and count what was never delivered. Runs once, at the end."""
        self.outbox.discard()
        with self.ledger.lock:
            remaining = self.ledger.pending()  # waiting, taken, or held: none of it will be sent
            report = self.ledger.lose(reason, remaining) if remaining else None
        if remaining:
            self.log.warning(
                "notification_dropped", reason=reason, count=remaining, dropped_by_reason=report
            )


def _has_slot(taken: list[Item]) -> bool:
    for _, data in taken:  # noqa: SIM110 - a loop is twice as fast as any() over a generator
        if type(data) is Slot:
            return True
    return False


def _expanded(taken: list[Item], dispatcher: Dispatcher) -> list[Outgoing]:
    """The events of what was taken, none of it a slot; its dispatches go to ``dispatcher``."""
    for _, data in taken:
        kind = type(data)
        if kind is not bytes and kind is not Step:
            break
    else:  # the common case: every item is one event already
        return taken  # type: ignore[return-value]  # bytes or Step: no slot without coalescing
    batch: list[Outgoing] = []
    for task_id, data in taken:  # a Slot only with coalescing:
        _add(batch, task_id, data, dispatcher)  # type: ignore[arg-type]
    return batch


def _add(
    batch: list[Outgoing],
    task_id: str,
    data: bytes | Step | Member | Dispatch,
    dispatcher: Dispatcher,
) -> None:
    """Add an item's events: a workflow member's event is two, its own and its step; a
    dispatch is the dispatcher's."""
    kind = type(data)
    if kind is bytes or kind is Step:
        batch.append((task_id, data))  # type: ignore[arg-type]  # bytes or Step: no cast call
    elif kind is Member:
        batch += data.events(task_id)  # type: ignore[union-attr]  # a Member
    else:
        dispatcher.take(data)  # type: ignore[arg-type]  # a Dispatch
