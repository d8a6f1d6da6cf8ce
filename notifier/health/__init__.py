"""Who serves the health endpoint (GET /health, GET /metrics), and every notifier's part in it.

One process serves it (``server``); every notifier process reports to it through heartbeat
snapshot files in a shared directory (``snapshots`` says why that survives forks). Which process
serves:

- outside Celery, the first process that starts a notifier with ``[health] enabled = true``;
- in a Celery worker, the main process, from ``worker_init``, before the pool forks.

Module state records who serves and where snapshots go. A forked child inherits it and so knows
that its parent serves: it only writes snapshots, closes its copy of the listening socket, and
never binds the port.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from notifier import seams
from notifier.config import NotifierConfig
from notifier.health.snapshots import SnapshotWriter
from notifier.logs import get_logger

if TYPE_CHECKING:
    from notifier.health.server import HealthServer
    from notifier.seams import NotifierView


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Who serves this process's notifiers, and where their snapshots go (None: nowhere)."""

    pid: int  # the process that serves, or that tried to and failed
    directory: str | None
    server: HealthServer | None


_lock = threading.Lock()
_endpoint: _Endpoint | None = None
_attached: weakref.WeakSet[NotifierView] = weakref.WeakSet()


def serve(config: NotifierConfig) -> HealthServer:
    """Serve the endpoint from this process. Idempotent: returns the running server if this
    process has one. Raises OSError when the address cannot be bound."""
    global _endpoint
    with _lock:
        endpoint = _endpoint
        if endpoint is not None and endpoint.pid == os.getpid() and endpoint.server is not None:
            return endpoint.server
        # Here, not at the top: prometheus_client is imported only by the process that serves.
        from notifier.health.server import HealthServer

        server = HealthServer(config)
        server.on_stop(_forget)
        _endpoint = _Endpoint(os.getpid(), server.directory, server)
        return server


def _forget(server: HealthServer) -> None:
    """The server is stopping: this process serves no longer (a later start may serve again)."""
    global _endpoint
    with _lock:
        if _endpoint is not None and _endpoint.server is server:
            _endpoint = None


def ensure_endpoint(config: NotifierConfig) -> None:
    """Serve from this process, unless it already does (or tried to), or a parent it was forked
    from does. Never raises: a failure to bind is logged and remembered, so that forked children
    do not try to bind the port either."""
    global _endpoint
    with _lock:
        if _endpoint is not None:
            return
    try:
        serve(config)
    except OSError as exc:
        health = config.health
        get_logger(config.logging.level).error(
            "health_endpoint_failed", host=health.host, port=health.port, error=str(exc)
        )
        with _lock:
            if _endpoint is None:
                # A configured directory may still be read by a server in another process.
                _endpoint = _Endpoint(os.getpid(), health.state_dir or None, None)


def attach(notifier: NotifierView) -> None:
    """Report ``notifier``'s health (heartbeat snapshots) and serve the endpoint if this process
    is the one that serves it. Called, through the start hook, before its thread starts."""
    ensure_endpoint(notifier.config)
    with _lock:
        if notifier in _attached:
            return  # restarted in a forked child: its writer already follows the pid
        _attached.add(notifier)
    writer = SnapshotWriter(
        notifier, _snapshot_directory, get_logger(notifier.config.logging.level)
    )
    notifier.on_heartbeat(writer.beat)
    # The snapshot goes when the notifier is collected or the process exits; a killed process's
    # snapshot is deleted by the server once its pid is gone.
    weakref.finalize(notifier, writer.remove)
    notifier.on_close(writer.remove)


def _attach_if_enabled(notifier: NotifierView) -> None:
    """The start hook: every notifier with ``[health] enabled = true`` reports its health."""
    if notifier.config.health.enabled:
        attach(notifier)


def _snapshot_directory() -> str | None:
    endpoint = _endpoint
    return None if endpoint is None else endpoint.directory


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at fork time
    endpoint = _endpoint
    if endpoint is not None and endpoint.server is not None:
        endpoint.server.forget_after_fork()


def _stop_at_exit() -> None:
    endpoint = _endpoint
    if endpoint is not None and endpoint.server is not None and endpoint.pid == os.getpid():
        endpoint.server.stop()


seams.on_start(_attach_if_enabled)
os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_at_exit)
