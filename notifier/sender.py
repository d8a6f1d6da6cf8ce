"""The notifier thread: its own event loop, its own queue, its own Redis connection.

Everything in this module runs on the notifier thread, except the three hand-over points the
publisher uses from other threads: ``ready`` (a threading.Event), ``request_stop()`` and
``force_stop()``. The loop, the janus queue's async side and the Redis client are created here and
never touched from anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

import hiredis
import janus
from redis.exceptions import RedisError

from notifier.batch import Event, Item, Packer
from notifier.coalesce import Coalescer, Gate, Slot
from notifier.config import NotifierConfig
from notifier.ledger import CRASHED, SHUTDOWN, Ledger
from notifier.link import PING, Link
from notifier.logs import Logger
from notifier.redaction import scrub, url_password

# While events flow, how often the sender looks at the queue, and for how long after the last
# event it keeps looking before it waits on the queue instead (see Sender._pump).
POLL_INTERVAL = 0.001
ACTIVE_WINDOW = 0.1

# What a failed send or connect can raise: redis-py's errors, socket errors, a garbled reply.
TRANSPORT_ERRORS = (RedisError, OSError, hiredis.ProtocolError)


class Sender:
    """Takes batches off the queue and publishes them, reconnecting until they are delivered."""

    def __init__(
        self, config: NotifierConfig, ledger: Ledger, coalescer: Coalescer, log: Logger
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.coalescer = coalescer
        interval = config.queue.progress_interval
        self._gate = Gate(interval) if interval > 0 else None
        self.log = log
        self.ready = threading.Event()
        # Called on the notifier thread with the loop's lag at every heartbeat (health snapshots).
        self.tick_listeners: list[Callable[[float], None]] = []
        self.queue: janus.Queue[Item] | None = None
        self._secret = url_password(config.redis.url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._link: Link | None = None
        self._packer = Packer(config)
        self._outage_since: float | None = None
        self._failed_connects = 0
        self._was_connected = False

    # Thread entry point and the hand-over points used from other threads ----------------------

    def run(self) -> None:
        """The notifier thread's body."""
        asyncio.run(self._run())

    def request_stop(self) -> None:
        """Refuse new events, deliver what is queued, then end the thread. Any thread."""
        if self.queue is not None:
            self.queue.shutdown()  # thread-safe; wakes the sender once the queue is empty

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
        self.queue = janus.Queue(self.config.queue.maxsize)
        heartbeat = asyncio.create_task(self._heartbeat())
        self.ready.set()
        reason = SHUTDOWN
        try:
            await self._pump(self.queue.async_q)
        except asyncio.CancelledError:
            pass  # force_stop(): the deadline passed
        except Exception:
            reason = CRASHED
            self.log.exception("notifier_thread_crashed")
        finally:
            heartbeat.cancel()
            self._drop_remaining(self.queue, reason)
            await self._disconnect()
            await self.queue.wait_closed()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

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

    async def _pump(self, queue: janus.AsyncQueue[Item]) -> None:
        """Take batches off the queue and deliver them, until the queue is shut down and empty.

        While events are flowing the sender polls the queue every POLL_INTERVAL instead of
        waiting on it: a waiting consumer makes every put() wake this loop through its self-pipe
        (a system call and a thread wake-up, several microseconds on the caller's side for each
        event). Polling moves that cost to this thread, once per interval, and lets events
        gather into batches. After ACTIVE_WINDOW without events it waits on the queue again, so
        an idle process costs nothing.
        """
        loop = asyncio.get_running_loop()
        await self._probe()  # connect now, not at the first event: health shows the truth early
        last_event = -math.inf
        while True:
            taken, closed = self._take(queue, [])
            batch = self._admit(taken, drain=closed)
            if not batch:
                if closed:
                    return  # closed, drained, and nothing held
                if loop.time() - last_event < ACTIVE_WINDOW:
                    await asyncio.sleep(POLL_INTERVAL)
                    continue
                first = await self._wait(queue)
                if first is None:
                    continue
                taken, _ = self._take(queue, [first])
                batch = self._admit(taken, drain=False)
                if not batch:
                    continue  # it was a progress slot, held until its task may send again
            last_event = loop.time()
            await self._deliver(queue, batch)

    async def _wait(self, queue: janus.AsyncQueue[Item]) -> Item | None:
        """Wait for the next event, for up to a heartbeat interval (then check the connection)
        or until the first held progress slot falls due; None when none came."""
        due = None if self._gate is None else self._gate.next_due()
        wait = self.config.health.heartbeat_interval
        if due is not None:
            wait = max(0.0, min(wait, due - time.monotonic()))
        try:
            async with asyncio.timeout(wait):
                return await queue.get()
        except TimeoutError:
            if due is None:
                await self._probe()
            return None
        except janus.AsyncQueueShutDown:
            return None  # the next _take sees it, and the loop drains what is held

    def _admit(self, taken: list[Item], drain: bool) -> list[Event]:
        """The events to send now: encoded events as they are; progress slots whose task may
        send again; held slots that fell due (every one, when draining). A slot taken too soon
        after its task's last progress is held, and keeps taking its task's newer progress."""
        gate = self._gate
        if gate is None:
            return cast(list[Event], taken)  # no coalescing: the queue holds no slots
        if not taken and not gate.holding:
            return []
        now, lock = time.monotonic(), self.ledger.lock
        batch: list[Event] = []
        if gate.holding:
            # Held slots whose task's terminal event was queued since: they were taken before
            # anything taken now, so they go first.
            with lock:
                for task_id, slot in gate.urgent():
                    self._close(task_id, slot, now, batch)
        for task_id, data in taken:
            if not isinstance(data, Slot):
                batch.append((task_id, data))
                continue
            due = gate.due(task_id)
            with lock:  # Slot.urgent and the open slots are written by callers under it
                if due > now and not drain and not data.urgent:
                    gate.hold(task_id, data, due)
                else:
                    self._close(task_id, data, now, batch)
        ready = gate.release() if drain else gate.ready(now)
        if ready:
            with lock:
                for task_id, slot in ready:
                    self._close(task_id, slot, now, batch)
        return batch

    def _close(self, task_id: str, slot: Slot, now: float, batch: list[Event]) -> None:
        """Send this slot's latest progress: into ``batch``. Called with the ledger's lock."""
        batch.append((task_id, self.coalescer.close(task_id, slot)))
        if self._gate is not None:
            self._gate.sent(task_id, now)

    def _take(self, queue: janus.AsyncQueue[Item], batch: list[Item]) -> tuple[list[Item], bool]:
        """Fill ``batch`` with what is queued, up to batch_size, without waiting; and whether the
        queue is shut down and empty."""
        while len(batch) < self.config.queue.batch_size:
            try:
                batch.append(queue.get_nowait())
            except janus.AsyncQueueEmpty:
                return batch, False
            except janus.AsyncQueueShutDown:
                return batch, True
        return batch, False

    async def _deliver(self, queue: janus.AsyncQueue[Item], batch: Sequence[Event]) -> None:
        """Publish the batch, reconnecting as often as it takes (at least once delivery)."""
        attempt = 0
        while True:
            link = self._link or await self._connect()
            if link is not None:
                try:
                    async with asyncio.timeout(self.config.redis.publish_timeout):
                        replies = await link.execute(*self._packer.pack(batch))
                except TimeoutError:
                    # The connection may have a reply in flight; reading it later would hand it to
                    # the wrong command (CVE-2023-28859). Throw the connection away.
                    self.log.warning(
                        "notification_publish_timeout",
                        events=len(batch),
                        timeout=self.config.redis.publish_timeout,
                    )
                    await self._lost_connection("publish timed out")
                except TRANSPORT_ERRORS as exc:
                    self.log.warning(
                        "notification_publish_failed", events=len(batch), error=self._describe(exc)
                    )
                    await self._lost_connection(self._describe(exc))
                else:
                    self._settle(queue, batch, replies)
                    return
                with self.ledger.lock:
                    self.ledger.resent += len(batch)
            await self._backoff(attempt)
            attempt += 1

    async def _probe(self) -> None:
        """Nothing to send for a while: check that the connection still answers, or try to make
        one, so that ``connected`` (and the health endpoint) follows Redis while idle too.
        Runs between batches, never during one: replies cannot interleave."""
        link = self._link
        if link is None:
            await self._connect()
            return
        try:
            async with asyncio.timeout(self.config.redis.publish_timeout):
                await link.execute(PING, 1)
        except TimeoutError:
            await self._lost_connection("PING timed out")
        except TRANSPORT_ERRORS as exc:
            await self._lost_connection(self._describe(exc))

    def _settle(
        self, queue: janus.AsyncQueue[Item], batch: Sequence[Event], replies: Sequence[object]
    ) -> None:
        """Count the batch: an event is published when its PUBLISH succeeded. History writes that
        failed are logged; they do not make the live event undelivered."""
        outcome = self._packer.read(len(batch), replies)
        for event, errors in (
            ("notification_publish_failed", outcome.publish_errors),
            ("notification_history_failed", outcome.history_errors),
        ):
            if errors:
                self.log.error(event, commands=len(errors), error=self._describe(errors[0]))
        self.ledger.settle(outcome.failed, queue.task_done)

    async def _connect(self) -> Link | None:
        cfg = self.config.redis
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                link = await Link.open(cfg.url, cfg.connect_timeout)
        except TimeoutError:
            self._connect_failed(f"connect timed out after {cfg.connect_timeout}s")
            return None
        except Exception as exc:
            # Transport errors, and anything else that stops a connection from even being tried
            # (an option redis-py refuses): reported like any failed connect, retried with
            # backoff; the notifier thread itself must never die of it.
            self._connect_failed(self._describe(exc))
            return None
        self._link = link
        ledger = self.ledger
        if self._was_connected:
            ledger.reconnects += 1
        self._was_connected = True
        ledger.connected = True
        self.log.info(
            "notifier_connected",
            reconnects=ledger.reconnects,
            outage_seconds=None
            if self._outage_since is None
            else round(time.monotonic() - self._outage_since, 3),
        )
        self._outage_since = None
        self._failed_connects = 0
        return link

    def _connect_failed(self, error: str) -> None:
        self.ledger.note_error(error)
        self._failed_connects += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        # The first failure of an outage is a warning; repeating it every backoff would flood.
        emit = self.log.warning if self._failed_connects == 1 else self.log.debug
        emit("notifier_connect_failed", error=error, attempts=self._failed_connects)

    async def _lost_connection(self, error: str) -> None:
        self.ledger.connected = False
        self.ledger.note_error(error)
        self._outage_since = time.monotonic()
        self.log.warning("notifier_disconnected", error=error)
        await self._disconnect()

    async def _backoff(self, attempt: int) -> None:
        cfg = self.config.reconnect
        delay = min(cfg.max_backoff, cfg.initial_backoff * 2 ** min(attempt, 32))
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _disconnect(self) -> None:
        link, self._link = self._link, None
        self.ledger.connected = False
        if link is not None:
            with contextlib.suppress(*TRANSPORT_ERRORS):  # abandoned either way
                await link.close()

    def _drop_remaining(self, queue: janus.Queue[Item], reason: str) -> None:
        """Count what was never delivered, then close the queue. Runs once, at the end."""
        queue.shutdown()
        with self.ledger.lock:
            remaining = queue.async_q.unfinished_tasks
            while True:
                try:
                    queue.async_q.get_nowait()
                except (janus.AsyncQueueEmpty, janus.AsyncQueueShutDown):
                    break
            for _ in range(remaining):
                queue.async_q.task_done()
            report = self.ledger.lose(reason, remaining) if remaining else None
        if remaining:
            self.log.warning(
                "notification_dropped", reason=reason, count=remaining, dropped_by_reason=report
            )
        queue.close()

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return scrub(text, self._secret)
