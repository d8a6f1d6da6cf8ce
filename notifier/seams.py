"""What optional parts may see of a notifier, and when they are told it starts.

The publisher is the core; health, metrics and the Celery wiring are built on it. They must not
import it (that would be a circle, and the core's file could not be read without them), so they
see a notifier only through :class:`NotifierView`, a read-only view that ``Notifier`` satisfies,
and attach themselves through :func:`on_start` and the view's own hooks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from notifier.config import NotifierConfig


class NotifierView(Protocol):
    """The read-only face of a notifier: its configuration, its counters and its hooks."""

    @property
    def config(self) -> NotifierConfig: ...

    def stats(self) -> dict[str, Any]:
        """The counters (``Notifier.stats()``); taken under the ledger's lock, so consistent."""
        ...

    def on_heartbeat(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(loop_lag_seconds)`` on the notifier thread at every heartbeat."""
        ...

    def on_close(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once, when the notifier is closed."""
        ...


StartHook = Callable[[NotifierView], None]

_lock = threading.Lock()
_start_hooks: list[StartHook] = []


def _new_lock_in_child() -> None:
    """A fork copies the lock as it was: held, if another thread was registering a hook then,
    and then never released in the child. The child starts with one of its own."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def on_start(hook: StartHook) -> None:
    """Call ``hook(notifier)`` whenever any notifier starts, before its thread does. A hook
    decides from ``notifier.config`` whether it has anything to do. Registering twice is once."""
    with _lock:
        if hook not in _start_hooks:
            _start_hooks.append(hook)


def starting(notifier: NotifierView) -> None:
    """Run the start hooks for ``notifier``. Called by ``Notifier.start()``; a hook that raises
    stops the start, as the part it attaches was asked for in the configuration."""
    with _lock:
        hooks = list(_start_hooks)
    for hook in hooks:
        hook(notifier)
