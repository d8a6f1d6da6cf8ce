"""The process-wide default notifier: created lazily, replaced in a forked child, drained at exit.

``notifier.publish_failed(...)`` and friends go through here, so that application code needs no
handle to pass around. In a forked child (a Celery prefork worker) the first call creates a fresh
notifier from the same configuration; the parent's thread, queue and connection are never touched.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from notifier.config import NotifierConfig
from notifier.config.loader import load_config
from notifier.events import describe_error
from notifier.logs import get_logger
from notifier.publisher import Notifier, warn_if_blocking

_lock = threading.Lock()
_config: NotifierConfig | None = None
_notifier: Notifier | None = None
_pid = os.getpid()


def configure(source: str | os.PathLike[str] | NotifierConfig | None = None) -> NotifierConfig:
    """Set the default notifier's configuration: a path, a NotifierConfig, or None for the
    default lookup (``$NOTIFIER_CONFIG``, ``./config.toml``, built-in defaults).

    A config error raises here, before anything starts. A default notifier already running is
    drained and closed; the next publish starts one with the new configuration.
    """
    global _config, _notifier
    config = source if isinstance(source, NotifierConfig) else load_config(source)
    with _lock:
        old, _notifier = _owned_notifier(), None
        _config = config
    if old is not None:
        warn_if_blocking("replacing a running default notifier", "await notifier.ashutdown()")
        old._close(None)
    return config


def get_notifier() -> Notifier:
    """The default notifier of this process, created (not yet started) on first use."""
    global _notifier, _config
    notifier = _owned_notifier()
    if notifier is not None:
        return notifier
    with _lock:
        notifier = _owned_notifier()
        if notifier is None:
            if _config is None:
                _config = load_config(None)
            notifier = _notifier = Notifier(_config)
        return notifier


def _owned_notifier() -> Notifier | None:
    """The default notifier if it belongs to this process (a pid check besides the fork hook)."""
    if _pid != os.getpid():
        _forget_after_fork()
    return _notifier


def _forget_after_fork() -> None:
    global _notifier, _pid, _lock
    _lock = threading.Lock()  # the parent may have held it at fork time
    _notifier, _pid = None, os.getpid()


os.register_at_fork(after_in_child=_forget_after_fork)


def publish(task_id: str, event_type: str, data: Any = None) -> bool:
    return get_notifier().publish(task_id, event_type, data)


def publish_failed(task_id: str, error: object, **extra: Any) -> bool:
    """Never raises: on the failure path, not even a configuration error found only now (the
    first call loads the configuration) may replace the task's own error. That one is logged as
    ``notifier_unavailable`` and the call returns False."""
    try:
        notifier = get_notifier()
    except Exception as exc:
        get_logger("error").error("notifier_unavailable", error=describe_error(exc)[0])
        return False
    return notifier.publish_failed(task_id, error, **extra)


def publish_progress(
    task_id: str, progress: float, message: str | None = None, **extra: Any
) -> bool:
    return get_notifier().publish_progress(task_id, progress, message, **extra)


def publish_completed(task_id: str, result: Any = None, **extra: Any) -> bool:
    return get_notifier().publish_completed(task_id, result, **extra)


def flush(timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` seconds for the default notifier; True when nothing accepted so far
    is still pending. Inside an event loop, ``await notifier.aflush()`` instead (this one warns
    there)."""
    warn_if_blocking("notifier.flush()", "await notifier.aflush()")
    notifier = _owned_notifier()
    return True if notifier is None else notifier._flush(timeout)


async def aflush(timeout: float = 5.0) -> bool:
    """:func:`flush` for code inside an event loop: the same answer, awaited without blocking
    the loop."""
    notifier = _owned_notifier()
    return True if notifier is None else await notifier.aflush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Drain and close the default notifier; the next publish creates a new one. Inside an event
    loop, ``await notifier.ashutdown()`` instead (this one warns there)."""
    warn_if_blocking("notifier.shutdown()", "await notifier.ashutdown()")
    notifier = _take_notifier()
    if notifier is not None:
        notifier._close(timeout)


async def ashutdown(timeout: float | None = None) -> None:
    """:func:`shutdown` for code inside an event loop: the same drain, awaited without blocking
    the loop."""
    notifier = _take_notifier()
    if notifier is not None:
        await notifier.aclose(timeout)


def _take_notifier() -> Notifier | None:
    """The default notifier, forgotten here: the next publish creates a new one."""
    global _notifier
    with _lock:
        notifier, _notifier = _owned_notifier(), None
    return notifier
