"""Real OS threads and locks for what the notifier thread shares with its callers, also in a
process that gevent has monkey-patched (``celery worker -P gevent``).

After gevent's ``patch_all()``, threading's Thread, Lock, Condition and Event are greenlet
versions, and gevent objects must not be shared between OS threads. The notifier thread must
still be a real OS thread: its asyncio loop must never run on gevent's hub (asyncio keeps the
running loop per OS thread, so a loop in a greenlet would be "running" for every other greenlet
too, and a task's own ``asyncio.run()`` would fail). So, when gevent has patched threading:

- the notifier thread is started with the original ``_thread.start_new_thread``;
- the locks it shares with callers are the original ``_thread`` locks (held for microseconds);
- its event loop polls with the original ``selectors.DefaultSelector`` and resolves host names
  with the original ``socket.getaddrinfo``, on a real thread;
- a caller that waits for it (``start``, ``flush``, ``close``) polls, sleeping with gevent's own
  ``sleep`` in between, so that the other greenlets run meanwhile;
- it never logs itself: the application's logging takes greenlet locks (a handler's, Celery's
  stdout proxy), and a real thread that takes one can leave the greenlet waiting for it asleep
  for good. Its log calls are handed to a ``HubRelay``, which wakes the hub (a gevent ``async``
  watcher, made to be sent from other threads) and writes them from a greenlet.

Without gevent each of these is the plain stdlib one. eventlet is not supported (it has no
equivalent of ``get_original`` for all of these, and its maintainers advise moving off it).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

POLL = 0.001  # seconds between checks while a greenlet waits for the notifier thread


def gevent_patched() -> bool:
    """Whether gevent has monkey-patched threading in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def eventlet_patched() -> bool:
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


def original(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent patched it (the current one without gevent)."""
    if gevent_patched():
        from gevent.monkey import get_original  # type: ignore[import-untyped]

        return get_original(module, name)
    return getattr(importlib.import_module(module), name)


def Lock() -> Any:  # noqa: N802 - stands in for threading.Lock
    return original("_thread", "allocate_lock")()


def RLock() -> Any:  # noqa: N802 - stands in for threading.RLock
    return original("_thread", "RLock")()


def get_ident() -> int:
    return int(original("_thread", "get_ident")())


class Event:
    """A flag one thread sets and another waits for; the wait lets other greenlets run."""

    def __init__(self) -> None:
        self._cooperative = gevent_patched()
        self._event = None if self._cooperative else threading.Event()
        self._set = False

    def set(self) -> None:
        if self._event is not None:
            self._event.set()
        self._set = True  # one store: readers in other threads see it whole

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        if self._event is not None:
            return self._event.wait(timeout)
        return wait_for(self.is_set, timeout)


def wait_for(done: Callable[[], bool], timeout: float) -> bool:
    """Poll ``done`` until it is true or ``timeout`` passes, sleeping with the (gevent) sleep in
    between; for a greenlet waiting on the notifier thread."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL, left))  # gevent's sleep: the hub runs the other greenlets
    return True


class HubRelay:
    """Runs calls handed over from real threads on the gevent hub's thread, in a greenlet."""

    def __init__(self) -> None:
        import gevent  # type: ignore[import-untyped]

        self._spawn = gevent.spawn
        self._pending: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.ref = False  # it never keeps the process alive on its own
        self._watcher.start(self._wake)

    def call(self, function: Callable[..., None], *args: Any) -> None:
        """Any thread: run ``function(*args)`` soon, on the hub's thread."""
        self._pending.append((function, args))  # deque.append is atomic
        self._watcher.send()  # thread-safe: wakes the hub's loop

    def _wake(self) -> None:
        self._spawn(self._drain)  # the hub itself must not block: a greenlet writes

    def _drain(self) -> None:
        while self._pending:
            function, args = self._pending.popleft()
            function(*args)


_relay: HubRelay | None = None
_relayed: dict[int, HubRelay] = {}  # real threads of ours whose log calls go to the hub


def hub_relay() -> HubRelay | None:
    """The relay for the current thread's log calls: set on notifier threads under gevent."""
    return _relayed.get(get_ident()) if _relayed else None


class Thread:
    """A real OS thread running ``target``, joinable from a greenlet without blocking the hub.

    Without gevent it is a plain daemon ``threading.Thread``."""

    daemon = True  # either way, interpreter exit never waits for it (the atexit drain does)

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._target = target
        self.name = name
        self.ident: int | None = None
        self._finished = Event()
        self._ending = Lock()  # orders when_finished() against the thread's end
        self._wakeups: list[Callable[[], None]] = []
        self._plain: threading.Thread | None = None
        self._relay: HubRelay | None = None
        if not gevent_patched():
            self._plain = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start it; under gevent, from the hub's thread (where the relay must be made)."""
        global _relay
        if self._plain is not None:
            self._plain.start()
            return
        if _relay is None:
            _relay = HubRelay()
        self._relay = _relay
        original("_thread", "start_new_thread")(self._run, ())

    def _run(self) -> None:
        self.ident = get_ident()
        if self._relay is not None:
            _relayed[self.ident] = self._relay
        try:
            self._target()
        finally:
            _relayed.pop(self.ident, None)
            with self._ending:
                self._finished.set()
                wakeups, self._wakeups = self._wakeups, []
            for wake in wakeups:
                wake()

    def join(self, timeout: float) -> None:
        self._finished.wait(max(0.0, timeout))

    def when_finished(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` on this thread as it ends; None when it has ended already (``wake``
        is never called then). Otherwise returns a function that cancels the wake-up."""
        with self._ending:
            if self._finished.is_set():
                return None
            self._wakeups.append(wake)

        def cancel() -> None:
            with self._ending:
                if wake in self._wakeups:
                    self._wakeups.remove(wake)

        return cancel

    def is_alive(self) -> bool:
        return self.ident is not None and not self._finished.is_set()

    def is_current(self) -> bool:
        return self.ident == get_ident()


def adopt_queue_locks(queue: Any) -> None:
    """Give a janus queue real locks in place of gevent's, before any other thread sees it.

    janus builds its sync side on threading.Lock and threading.Condition, looked up when the
    queue is made: greenlet ones after patch_all. The notifier only calls the sync side's
    non-blocking methods (put_nowait, shutdown), so nothing ever waits on these conditions;
    they are notified under the real lock, as janus expects."""
    if not gevent_patched():
        return
    condition = original("threading", "Condition")
    mutex = Lock()
    queue._sync_mutex = mutex
    queue._sync_not_empty = condition(mutex)
    queue._sync_not_full = condition(mutex)
    queue._sync_tasks_done = condition(mutex)


class _NativeLoop(asyncio.SelectorEventLoop):
    """An event loop on the original selector, resolving names on a real thread."""

    def __init__(self) -> None:
        super().__init__(original("selectors", "DefaultSelector")())

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        future: asyncio.Future[list[Any]] = self.create_future()
        resolve = original("socket", "getaddrinfo")

        def work() -> None:
            try:
                result = resolve(host, port, family, type, proto, flags)
            except BaseException as exc:  # handed to the awaiting coroutine
                self.call_soon_threadsafe(_settle, future, None, exc)
            else:
                self.call_soon_threadsafe(_settle, future, result, None)

        original("_thread", "start_new_thread")(work, ())
        return await future


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The notifier thread's loop: the default one, or, under gevent, one that never touches
    gevent's patched selectors or resolver."""
    return _NativeLoop if gevent_patched() else None


__all__ = [
    "Event",
    "HubRelay",
    "Lock",
    "RLock",
    "Thread",
    "adopt_queue_locks",
    "eventlet_patched",
    "gevent_patched",
    "get_ident",
    "hub_relay",
    "loop_factory",
    "original",
    "wait_for",
]
