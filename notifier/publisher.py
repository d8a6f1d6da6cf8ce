"""The caller's side: validate and encode on the calling thread, hand over without blocking.

A publish call never awaits anything and never raises for transport reasons. It returns True when
the event is in the queue and False when it was dropped (queue full, notifier closed); every drop is
counted by reason in ``stats()``. ``publish_failed`` never raises at all. The put itself, and its
accounting, is ``handover``'s.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from notifier import native, seams
from notifier.aio import wait_woken
from notifier.coalesce import Coalescer
from notifier.config import NotifierConfig
from notifier.config.loader import default_config
from notifier.dispatch import Dispatch
from notifier.events import (
    check_event_type,
    check_task_id,
    encode_event,
    encode_failure,
    event_id_prefix,
)
from notifier.exceptions import InvalidEvent, NotifierError
from notifier.handover import PLAIN, TERMINAL, Handover
from notifier.ledger import CLOSED, Ledger
from notifier.logs import get_logger
from notifier.outbox import Outbox
from notifier.recent import Recent
from notifier.sender import Sender
from notifier.workflows.ids import PREFIX as WORKFLOW_PREFIX
from notifier.workflows.ids import channel_id
from notifier.workflows.steps import Member, Step

START_TIMEOUT = 5.0  # creating a loop and a queue in a new thread takes milliseconds
FORCE_STOP_GRACE = 0.4  # after close()'s deadline, how long the thread gets to count and close

_NEW, _RUNNING, _CLOSED = "new", "running", "closed"
WORKFLOW_MEMBERS_MAX = 4096  # tasks remembered as workflow members: some never leave here

# What a forked child inherited from its parent's notifier threads. The child must never touch
# these (their locks may be held, their sockets are the parent's) nor let them be collected
# (finalizers would close the parent's loop and sockets), so they are parked here for good.
_inherited_from_parent: list[object] = []
_live: weakref.WeakSet[Notifier] = weakref.WeakSet()


class Notifier:
    """A notifier thread with its own event loop and Redis connection, and the API to feed it.

    Nothing starts until :meth:`start` or the first publish. Safe to call from any thread and from
    code running inside any event loop. What the integrations need beyond the publish calls
    (workflow membership, workflow steps, task endings) is :attr:`integration`'s.
    """

    def __init__(self, config: NotifierConfig | None = None) -> None:
        self.config = config if config is not None else default_config()
        self._log = get_logger(self.config.logging.level, redis_url=self.config.redis.safe_url)
        self._max_bytes = self.config.queue.max_event_bytes
        # Called on the notifier thread at every heartbeat with the loop's lag (health snapshots).
        self._heartbeat_listeners: list[Callable[[float], None]] = []
        self._close_listeners: list[Callable[[], None]] = []
        self._tracking_endings = False  # see Integration.track_endings; kept across a fork
        self.integration = Integration(self)
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._state = _NEW
        self._lifecycle = threading.Lock()
        self._ledger = Ledger()
        self._coalescer = Coalescer(self._tracking_endings)
        self._handover = Handover(self.config, self._ledger, self._coalescer, self._log)
        self._sender: Sender | None = None
        self._thread: native.Thread | None = None
        self._outbox: Outbox | None = None  # set once the thread is ready to take events
        # channel id of a task -> its workflow id, for the tasks running in a workflow here
        self._workflows: Recent[str, str] = Recent(WORKFLOW_MEMBERS_MAX)

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the notifier thread. Idempotent; returns as soon as the thread is ready to accept
        events (the Redis connection is made in the background)."""
        with self._lifecycle:
            if self._state == _RUNNING:
                return
            if self._state == _CLOSED:
                raise NotifierError("this notifier is closed; create a new one")
            if native.eventlet_patched():
                raise NotifierError(
                    "threading is monkey-patched by eventlet: its threads are green, so the "
                    "notifier thread would share the hub it exists to stay off. Use gevent "
                    "(supported: the notifier runs on a real thread there) or an unpatched process"
                )
            seams.starting(self)  # optional parts attach here (health: notifier.health)
            outbox = Outbox(
                self.config.queue.maxsize, self._ledger.lock, self.config.queue.batch_size
            )
            sender = Sender(self.config, self._ledger, self._coalescer, outbox, self._log)
            sender.tick_listeners = self._heartbeat_listeners
            thread = native.Thread(target=sender.run, name="notifier")
            thread.start()
            if not sender.ready.wait(START_TIMEOUT):
                raise NotifierError(f"the notifier thread did not start within {START_TIMEOUT}s")
            self._sender, self._thread, self._outbox = sender, thread, outbox
            self._state = _RUNNING

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued for up to ``timeout`` seconds (default: shutdown.drain_timeout),
        then stop. What is still undelivered is counted as dropped with reason ``shutdown``.
        Idempotent. Inside an event loop, ``await aclose()`` instead (this one warns there)."""
        warn_if_blocking("Notifier.close()", "await notifier.aclose()")
        self._close(timeout)

    def _close(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = self.config.shutdown.drain_timeout
        self._finish_close(self._begin_close(), time.monotonic() + max(0.0, timeout))

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`close` for code inside an event loop: the same drain and deadline, awaited
        without blocking the loop. Cancelling the awaiting task does not cut the drain short: it
        goes on to its deadline on a thread of its own."""
        if timeout is None:
            timeout = self.config.shutdown.drain_timeout
        deadline = time.monotonic() + max(0.0, timeout)
        running = self._begin_close()
        if running is None or running[1].is_current():
            self._finish_close(running, deadline)  # nothing to wait for
            return
        sender, thread = running
        try:
            if not await wait_woken(thread.when_finished, deadline - time.monotonic()):
                sender.force_stop()
                await wait_woken(thread.when_finished, FORCE_STOP_GRACE)
        except asyncio.CancelledError:
            threading.Thread(
                target=self._finish_close, args=(running, deadline), name="notifier-close"
            ).start()
            raise
        self._report_closed(thread)
        self._tell_close_listeners()

    def _begin_close(self) -> tuple[Sender, native.Thread] | None:
        """Refuse new events and tell the thread to drain; the running parts, if any."""
        with self._lifecycle:
            if self._pid != os.getpid():
                self._after_fork_in_child()
            state, self._state = self._state, _CLOSED
            sender, thread = self._sender, self._thread
        if state != _RUNNING or sender is None or thread is None:
            return None
        sender.request_stop()
        return sender, thread

    def _finish_close(self, running: tuple[Sender, native.Thread] | None, deadline: float) -> None:
        """Wait for the drain until ``deadline``, then cut it short; tell the close listeners."""
        if running is not None:
            self._join(*running, deadline)
        self._tell_close_listeners()

    def _tell_close_listeners(self) -> None:
        listeners, self._close_listeners = self._close_listeners, []  # once, on the first close
        for listener in listeners:
            try:
                listener()
            except Exception:  # one broken listener must not stop the others, nor the close
                self._log.exception("notifier_close_listener_failed")

    def _join(self, sender: Sender, thread: native.Thread, deadline: float) -> None:
        if thread.is_current():
            return  # called from a log processor on the notifier thread: it stops by itself
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            sender.force_stop()
            thread.join(FORCE_STOP_GRACE)
        self._report_closed(thread)

    def _report_closed(self, thread: native.Thread) -> None:
        stats = self.stats()
        if thread.is_alive():
            self._log.warning("notifier_close_timed_out", pending=stats["pending"])
        self._log.info(
            "notifier_closed",
            **{key: stats[key] for key in ("published", "pending", "dropped", "reconnects")},
            dropped_by_reason=stats["dropped_by_reason"],
        )

    def on_close(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once, when this notifier is closed (after its drain)."""
        self._close_listeners.append(listener)

    def on_heartbeat(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(loop_lag_seconds)`` on the notifier thread at every heartbeat.

        It must be quick and must not block: it runs on the loop that sends the events.
        """
        self._heartbeat_listeners.append(listener)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds; True when nothing accepted so far is still pending.
        Inside an event loop, ``await aflush()`` instead (this one warns there)."""
        warn_if_blocking("Notifier.flush()", "await notifier.aflush()")
        return self._flush(timeout)

    def _flush(self, timeout: float) -> bool:
        if self._pid != os.getpid():
            return True  # a forked child has accepted nothing yet
        self._nudge()
        return self._ledger.wait_settled(timeout)

    async def aflush(self, timeout: float = 5.0) -> bool:
        """:meth:`flush` for code inside an event loop: the same answer, awaited without
        blocking the loop."""
        if self._pid != os.getpid():
            return True  # a forked child has accepted nothing yet
        self._nudge()
        return await wait_woken(self._ledger.when_settled, timeout)

    def _nudge(self) -> None:
        """A dozing notifier thread looks at its outbox now: somebody waits for its events."""
        outbox = self._outbox
        if outbox is not None:
            outbox.nudge()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        warn_if_blocking("leaving `with Notifier(...)`", "async with Notifier(...)")
        self._close(None)

    async def __aenter__(self) -> Self:
        self.start()  # returns once the thread runs, in milliseconds: it never waits on Redis
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Publishing -----------------------------------------------------------------------------

    def publish(self, task_id: str, event_type: str, data: Mapping[str, Any] | None = None) -> bool:
        """Queue one event. True when accepted, False when dropped; InvalidEvent for bad input."""
        return self._publish(task_id, check_event_type(event_type), {} if data is None else data)

    def _publish(self, task_id: str, event_type: str, data: Mapping[str, Any]) -> bool:
        """publish() for an event type known to be valid (the helpers' own)."""
        payload = encode_event(check_task_id(task_id), event_type, data, self._max_bytes)
        if self._workflows:  # empty unless this process runs a workflow's members
            workflow = self._workflows.get(task_id)
            if workflow is not None:  # a member: its step goes with it
                progress = data.get("progress") if event_type == "progress" else None
                member = Member(payload, workflow, event_type, progress)
                return self._offer(task_id, member, self._handover.kind(event_type))
        return self._offer(task_id, payload, self._handover.kind(event_type))

    def publish_failed(self, task_id: str, error: object, **extra: Any) -> bool:
        """Queue a ``failed`` event. Never raises, whatever its arguments: a malformed task id
        or extras that cannot be encoded make it return False, counted as an ``invalid`` drop
        and logged as ``notification_invalid``. Safe in any ``except`` block."""
        try:
            if "error_type" in extra:
                raise InvalidEvent("extra fields must not override error_type")
            payload = encode_failure(check_task_id(task_id), error, extra, self._max_bytes)
        except Exception as exc:  # the failure path: nothing may replace the task's own error
            return self._handover.refuse_invalid(exc)
        workflow = self._workflows.get(task_id) if self._workflows else None
        if workflow is not None:  # a member: its step goes with it
            return self._offer(task_id, Member(payload, workflow, "failed"), TERMINAL)
        return self._offer(task_id, payload, TERMINAL)

    def publish_progress(
        self, task_id: str, progress: float, message: str | None = None, **extra: Any
    ) -> bool:
        """Queue a ``progress`` event; ``progress`` is a finite number (by convention a percent)."""
        if isinstance(progress, bool) or not isinstance(progress, (int, float)):  # noqa: UP038
            raise InvalidEvent(f"progress must be a number, got {type(progress).__name__}")
        if message is not None and not isinstance(message, str):
            raise InvalidEvent(f"message must be a str or None, got {type(message).__name__}")
        return self._publish(
            task_id, "progress", {**extra, "progress": progress, "message": message}
        )

    def publish_completed(self, task_id: str, result: Any = None, **extra: Any) -> bool:
        """Queue a ``completed`` event carrying ``result`` (any JSON value)."""
        return self._publish(task_id, "completed", {**extra, "result": result})

    def _offer(self, task_id: str, payload: bytes | Step | Member | Dispatch, kind: int) -> bool:
        outbox = self._outbox
        if outbox is None:  # not started yet, or forked: the fork hook cleared it in the child
            outbox = self._start_lazily()
            if outbox is None:
                return self._handover.reject(CLOSED)
        return self._handover.offer(outbox, task_id, payload, kind, self._state == _RUNNING)

    def _start_lazily(self) -> Outbox | None:
        """The outbox to put into, starting the thread if need be; None when closed."""
        if self._pid != os.getpid():
            with self._lifecycle:
                if self._pid != os.getpid():
                    self._after_fork_in_child()
        if self._state == _CLOSED:
            return None
        try:
            self.start()
        except (NotifierError, RuntimeError) as exc:  # RuntimeError: interpreter shutting down
            self._log.error("notifier_start_failed", error=str(exc))
            return None
        return self._outbox

    # Introspection --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters; ``accepted == published + pending + coalesced + drops after acceptance`` at
        any moment."""
        ledger = self._ledger
        with ledger.lock:
            stats = ledger.snapshot()
            stats["queue_size"] = self._outbox.size() if self._outbox is not None else 0
        stats["queue_capacity"] = self.config.queue.maxsize
        stats["thread_alive"] = self._thread is not None and self._thread.is_alive()
        stats["pid"] = self._pid
        stats["event_id_prefix"] = event_id_prefix()  # this process's event ids start with it
        return stats

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<Notifier {self._state} url={self.config.redis.safe_url!r} "
            f"published={s['published']} pending={s['pending']} dropped={s['dropped']} "
            f"connected={s['connected']}>"
        )

    # Fork safety ----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Forget the parent's thread, queue and connection; start afresh on the next publish.

        The parent's queued events stay the parent's: the child never sends them again.
        """
        _inherited_from_parent.append((self._sender, self._thread, self._outbox))
        closed = self._state == _CLOSED
        self._reset()
        if closed:
            self._state = _CLOSED


class Integration:
    """What the integrations need of a notifier beyond the user's API: which workflow a task
    runs in, a workflow's own steps, when tasks ended (the Celery wiring), and messages for
    other systems (``notifier.channels``). ``Notifier.integration``; an application needs none
    of it."""

    __slots__ = ("_notifier",)

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def join_workflow(self, task_id: str, workflow_id: str) -> None:
        """From now on, each event on ``task_id``'s channel is also a step of ``workflow_id``:
        the task runs as one of its members. InvalidEvent for an id that names no channel."""
        check_task_id(task_id)
        channel_id(workflow_id)
        self._notifier._workflows.remember(task_id, workflow_id)

    def leave_workflow(self, task_id: str) -> None:
        self._notifier._workflows.pop(task_id, None)

    def publish_step(self, step: Step) -> bool:
        """Queue a step of a workflow (a declaration: ``workflows.steps``), counted as any event
        is. A member's events become steps by themselves (``join_workflow``)."""
        return self._notifier._offer(WORKFLOW_PREFIX + step.workflow, step, PLAIN)

    def dispatch(self, key: str, dispatch: Dispatch) -> bool:
        """Queue a message for another system (``notifier.dispatch``), counted, drained and
        dropped as any event is; ``key`` names it in the queue (a channel layer's group, say).
        True when accepted, False when dropped; never blocks, never raises."""
        return self._notifier._offer(key, dispatch, PLAIN)

    def track_endings(self) -> None:
        """From now on, remember when each task's terminal event is accepted, for
        :meth:`ended_since`. The Celery lifecycle turns it on before a task runs; without it a
        terminal event skips that bookkeeping."""
        if self._notifier._coalescer.tracking:
            return  # on already: one attribute read, no lock (it is never turned off)
        with self._notifier._ledger.lock:
            self._track_endings()

    def _track_endings(self) -> None:
        """track_endings(), with the ledger's lock held. The flag outlives a fork's reset."""
        notifier = self._notifier
        notifier._tracking_endings = notifier._coalescer.tracking = True

    @property
    def connected(self) -> bool:
        """Whether the notifier thread's connection to Redis is up, as it last found it: one
        attribute read, no lock (``stats()`` snapshots every counter under the ledger's)."""
        return self._notifier._ledger.connected

    def ended_since(self, task_id: str, since: float) -> bool:
        """Whether an event ending ``task_id`` (completed, failed, revoked) was accepted at or
        after ``since``, a ``time.monotonic()`` value. Recent tasks only (thousands), and only
        events accepted since :meth:`track_endings`, which the first call turns on."""
        notifier = self._notifier
        with notifier._ledger.lock:
            if not notifier._coalescer.tracking:
                self._track_endings()
                return False  # nothing was remembered before now
            return notifier._coalescer.ended_since(task_id, since)


def warn_if_blocking(call: str, instead: str) -> None:
    """Warn when ``call``, which waits for the notifier thread, is made on a thread whose event
    loop is running: it would hold that loop up for as long as it waits. Made by the public
    call itself, so that the warning points at its caller."""
    if asyncio._get_running_loop() is not None:
        message = f"{call} blocks the running event loop; use `{instead}`"
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _after_fork_in_child() -> None:
    for notifier in list(_live):
        notifier._after_fork_in_child()


def _close_all_at_exit() -> None:
    """Drain every running notifier at interpreter exit, all at once, each within its
    ``shutdown.drain_timeout``."""
    now = time.monotonic()
    closing = [
        (n, n._begin_close(), now + n.config.shutdown.drain_timeout)
        for n in list(_live)
        if n._pid == os.getpid()
    ]
    for notifier, running, deadline in closing:
        notifier._finish_close(running, deadline)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
