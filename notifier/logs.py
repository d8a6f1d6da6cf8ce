"""The notifier's logger. The library never configures structlog; the application does.

``[logging] level`` filters the notifier's own events before they reach the application's
processors, so a chatty level here never changes how the application's other loggers behave.

Fork safety: structlog's ``PrintLogger`` holds a lock per output file while it writes, and nothing
re-creates that lock in a forked child. A fork that lands while the notifier thread is writing a
line would leave the child's copy of the lock held for good, and the child's first log line (its
own notifier's ``notifier_connected``, say) would hang. So every line the notifier writes is
written under ``_writing``, and a fork waits for it, as the standard library's ``logging`` does
with its own locks.

Under gevent, a call made on the notifier's real thread is handed to the hub and written from a
greenlet (``native``): the application's logging locks are greenlet locks there.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from notifier import native

_writing = threading.RLock()  # re-entrant: a processor may itself log through the notifier


class Logger:
    """A structlog logger whose calls never overlap a fork."""

    __slots__ = ("_logger",)

    def __init__(self, logger: FilteringBoundLogger) -> None:
        self._logger = logger

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._log("exception", event, kw)

    def _log(self, method: str, event: str, kw: dict[str, Any]) -> None:
        relay = native.hub_relay()
        if relay is None:
            self._write(method, event, kw)
            return
        if method == "exception":
            kw.setdefault("exc_info", sys.exc_info())  # the greenlet that writes has none
        relay.call(self._write, method, event, kw)

    def _write(self, method: str, event: str, kw: dict[str, Any]) -> None:
        with _writing:
            getattr(self._logger, method)(event, **kw)


def get_logger(level: str, **context: Any) -> Logger:
    """A lazy logger: the application's structlog configuration is looked up at each call (so
    ``capture_logs()`` sees our events), never frozen by an early ``bind()``."""
    logger: FilteringBoundLogger = structlog.wrap_logger(
        None,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory_args=("notifier",),
        **context,
    )
    return Logger(logger)


def _hold_before_fork() -> None:
    _writing.acquire()


def _release_in_parent() -> None:
    _writing.release()


def _new_lock_in_child() -> None:
    global _writing
    _writing = threading.RLock()  # the parent's copy is held by the thread that forked


os.register_at_fork(
    before=_hold_before_fork, after_in_parent=_release_in_parent, after_in_child=_new_lock_in_child
)
