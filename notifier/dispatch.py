"""Dispatches: messages for another system, delivered by the notifier thread on its own loop.

An integration (``notifier.channels``) hands a :class:`Dispatch` over through
``Notifier.integration``; it goes through the same outbox, ledger and drain as an event, so
``flush()``, ``close()``, the fork rules, the queue's overflow and ``stats()`` apply to it
unchanged. On the notifier thread the :class:`Dispatcher` awaits each one's ``send`` in the order
they were taken, beside the Redis batches (never in their way), and settles it: published when
``send`` returns, sent again after a backoff when it raises :class:`Retry` (counted in
``resent``, until it is delivered or the notifier shuts down), dropped for good with the reason a
:class:`Drop` names, or ``dispatch_error`` for any other exception.

``send`` gets the thread's :class:`Resources`: objects bound to the notifier thread's loop (a
connection pool, a channel layer), made on first use and closed when the thread ends. The core
knows nothing of what a dispatch sends, nor to whom.

Everything here but :class:`Dispatch` runs on the notifier thread only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from notifier.aio import cancel_and_wait
from notifier.config import NotifierConfig
from notifier.ledger import Ledger
from notifier.logs import Logger

DISPATCH_ERROR = "dispatch_error"  # a dispatch raised something it did not classify: a bug
RESOURCE_CLOSE_TIMEOUT = 1.0  # seconds each resource gets to close at the thread's end

T = TypeVar("T")


class Retry(Exception):  # noqa: N818 - an instruction to the sender, not an error's name
    """Transport trouble: send the dispatch again after a backoff. The message says why, and is
    logged: it must hold no secret."""


class Drop(Exception):  # noqa: N818 - an instruction to the sender, not an error's name
    """Give the dispatch up for good, counted under ``reason`` (``dropped_by_reason``); the
    message says why, and is logged: it must hold no secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Dispatch:
    """A message for another system. Made on the caller's thread, with everything it needs
    checked and copied there; sent on the notifier thread. A plain base class, not an ABC: the
    notifier thread tells a dispatch from an event with one type check."""

    __slots__ = ()

    async def send(self, resources: Resources) -> None:
        """Deliver the message. Raise :class:`Retry` for transport trouble, :class:`Drop` for a
        message that will never be delivered."""
        raise NotImplementedError


class Resources:
    """Objects bound to the notifier thread's loop, one per key, made on first use and closed
    when the thread ends, newest first."""

    def __init__(self, log: Logger) -> None:
        self._log = log
        self._made: dict[Hashable, Any] = {}
        self._closers: list[tuple[Hashable, Callable[[], Awaitable[None]]]] = []

    def get(self, key: Hashable, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> T:
        """The object under ``key``, made by ``make()`` the first time; ``close(obj)`` is
        awaited when the thread ends. An exception from ``make`` is raised, and nothing kept."""
        try:
            found: T = self._made[key]
            return found
        except KeyError:
            pass
        made = self._made[key] = make()
        self._closers.append((key, lambda: close(made)))
        return made

    async def close(self) -> None:
        """Close every object; one that fails or hangs is logged and the others still close."""
        closers, self._closers = self._closers, []
        self._made.clear()
        for key, closer in reversed(closers):
            try:
                async with asyncio.timeout(RESOURCE_CLOSE_TIMEOUT):
                    await closer()
            except Exception as exc:
                self._log.warning(
                    "notifier_resource_close_failed", resource=repr(key), error=type(exc).__name__
                )


class Dispatcher:
    """Sends the dispatches the notifier thread took, one at a time in the order taken, on a
    task of its own beside the Redis batches."""

    def __init__(
        self,
        config: NotifierConfig,
        ledger: Ledger,
        log: Logger,
        hold: Callable[[int], None],
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.log = log
        # hold(+n) when dispatches are taken, hold(-n) when they are settled or given up: each
        # holds a place in the bounded queue meanwhile (Outbox.held).
        self.hold = hold
        self.resources = Resources(log)
        self._queue: deque[Dispatch] = deque()
        self._task: asyncio.Task[None] | None = None

    def take(self, dispatch: Dispatch) -> None:
        """Queue ``dispatch`` to be sent; called from the notifier thread's loop."""
        self.hold(1)
        self._queue.append(dispatch)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def idle(self) -> None:
        """Until every dispatch taken so far is settled."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop sending (what was not settled is the ledger's to count as dropped), then close
        the resources. At the thread's end, after the count."""
        await cancel_and_wait(self._task)
        self.hold(-len(self._queue))
        self._queue.clear()
        await self.resources.close()

    async def _run(self) -> None:
        queue = self._queue
        while queue:
            await self._deliver(queue[0])
            queue.popleft()
            self.hold(-1)

    async def _deliver(self, dispatch: Dispatch) -> None:
        """Send one dispatch until it is settled: published, or dropped for good."""
        attempt = 0
        while True:
            try:
                # A send that hangs (a server that stopped answering) is transport trouble too.
                async with asyncio.timeout(self.config.redis.publish_timeout):
                    await dispatch.send(self.resources)
            except (Retry, TimeoutError) as exc:
                if attempt == 0:
                    self.log.warning("dispatch_retrying", error=str(exc) or "timed out")
                with self.ledger.lock:
                    self.ledger.resent += 1
                await asyncio.sleep(self.config.reconnect.delay(attempt))
                attempt += 1
                continue
            except Drop as exc:
                self._drop(exc.reason, str(exc))
            except Exception as exc:
                self._drop(DISPATCH_ERROR, f"{type(exc).__name__} from {type(dispatch).__name__}")
            else:
                self.ledger.settle([False])
                if attempt:
                    self.log.info("dispatch_resumed", attempts=attempt + 1)
            return

    def _drop(self, reason: str, error: str) -> None:
        with self.ledger.lock:
            report = self.ledger.lose(reason)
        if report is not None:  # rate-limited as every drop is: a line per interval
            self.log.warning("notification_dropped", dropped_by_reason=report, error=error)
