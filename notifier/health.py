"""The health endpoint: GET /health (200 or 503, JSON) and GET /metrics (Prometheus).

One process serves it; every notifier process reports to it through heartbeat snapshot files in
a shared directory (``notifier/snapshots.py`` says why that survives forks). Which process serves:

- outside Celery, the first process that starts a notifier with ``[health] enabled = true``;
- in a Celery worker, the main process, from ``worker_init``, before the pool forks.

Module state records who serves and where snapshots go. A forked child inherits it and so knows
that its parent serves: it only writes snapshots, closes its copy of the listening socket, and
never binds the port.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import weakref
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from notifier import metrics
from notifier.config import NotifierConfig
from notifier.logs import get_logger
from notifier.snapshots import Report, SnapshotWriter, read_report

if TYPE_CHECKING:
    from notifier.publisher import Notifier

PATHS = ("/health", "/metrics")
ALLOWED = "GET, HEAD"
JSON = "application/json"
REQUEST_TIMEOUT = 10.0  # a client that stalls mid-request gives its thread back after this
POLL_INTERVAL = 0.2  # how long stop() may wait for the serving loop to notice
MAX_DISCARDED_BODY = 1 << 16


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Who serves this process's notifiers, and where their snapshots go (None: nowhere)."""

    pid: int  # the process that serves, or that tried to and failed
    directory: str | None
    server: HealthServer | None


_lock = threading.Lock()
_endpoint: _Endpoint | None = None
_attached: weakref.WeakSet[Notifier] = weakref.WeakSet()


def serve(config: NotifierConfig) -> HealthServer:
    """Serve the endpoint from this process. Idempotent: returns the running server if this
    process has one. Raises OSError when the address cannot be bound."""
    global _endpoint
    with _lock:
        endpoint = _endpoint
        if endpoint is not None and endpoint.pid == os.getpid() and endpoint.server is not None:
            return endpoint.server
        server = HealthServer(config)
        _endpoint = _Endpoint(os.getpid(), server.directory, server)
        return server


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


def attach(notifier: Notifier) -> None:
    """Report ``notifier``'s health (heartbeat snapshots) and serve the endpoint if this process
    is the one that serves it. Called by ``Notifier.start()`` before its thread starts."""
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
    on_close = getattr(notifier, "on_close", None)  # Notifier.on_close, where it exists
    if on_close is not None:
        on_close(writer.remove)


def _snapshot_directory() -> str | None:
    endpoint = _endpoint
    return None if endpoint is None else endpoint.directory


class HealthServer:
    """Answers GET /health and GET /metrics from the snapshots in ``directory``, on a daemon
    thread named ``notifier-health``. Made by :func:`serve`; stopped by :meth:`stop` or at exit.
    """

    def __init__(self, config: NotifierConfig) -> None:
        health = config.health
        self.log = get_logger(config.logging.level)
        self._pid = os.getpid()
        self._stopped = False
        self._owns_directory = not health.state_dir
        if health.state_dir:
            os.makedirs(health.state_dir, mode=0o700, exist_ok=True)
            self.directory = health.state_dir
        else:
            self.directory = tempfile.mkdtemp(prefix="notifier-health-")
        try:
            self._httpd = _HTTPServer((health.host, health.port), self)
        except OSError:
            self._remove_directory()
            raise
        self.host = health.host
        self.port: int = self._httpd.socket.getsockname()[1]
        self._registry = metrics.registry(self.report)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name="notifier-health",
            daemon=True,
        )
        self._thread.start()
        self.log.info(
            "health_endpoint_started", host=self.host, port=self.port, state_dir=self.directory
        )

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:9477``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def report(self) -> Report:
        return read_report(self.directory, self.log)

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        return metrics.render(self._registry, accept)

    def stop(self) -> None:
        """Stop serving and remove the snapshot directory if it made it. Idempotent; does
        nothing in a forked child (the server is its parent's)."""
        global _endpoint
        if self._pid != os.getpid():
            return
        with _lock:
            if _endpoint is not None and _endpoint.server is self:
                _endpoint = None
            stopped, self._stopped = self._stopped, True
        if stopped:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._remove_directory()
        self.log.info("health_endpoint_stopped", port=self.port)

    def _remove_directory(self) -> None:
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _forget_after_fork(self) -> None:
        """In a forked child: close our copy of the listening socket. Never shutdown(): that
        would act on the parent's socket too, and the serving thread is not in this process."""
        self._httpd.socket.close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds up interpreter exit

    def __init__(self, address: tuple[str, int], health: HealthServer) -> None:
        self.health = health
        # IPv4 or IPv6, whichever the host is; read by TCPServer.__init__ when it makes the socket.
        self.address_family = socket.getaddrinfo(address[0], None, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks our own name up in DNS (getfqdn), which can take seconds
        # on a badly configured host; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback on stderr. What gets here is a client that hung up or
        # timed out mid-request: nothing the operator must act on.
        self.health.log.debug("health_request_failed", client=str(client_address), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = REQUEST_TIMEOUT
    server_version = "notifier-health"
    # Answer even an unparsable request with a status line (the default, HTTP/0.9, has none).
    default_request_version = "HTTP/1.0"

    def version_string(self) -> str:
        return self.server_version  # no Python version for whoever asks

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _not_allowed(self) -> None:
        self._discard_body()
        body = {"error": f"method {self.command} not allowed", "allow": ALLOWED}
        self._send(405, _json(body), JSON, with_body=True, allow=ALLOWED)

    def _answer(self, with_body: bool) -> None:
        path = urlsplit(self.path).path
        try:
            status, body, content_type = self._respond(path)
        except Exception:  # a bug of ours: answer 500, log it, keep serving
            self.server.health.log.exception("health_request_failed", path=path)
            status, body, content_type = 500, _json({"error": "internal error, see the log"}), JSON
        self._send(status, body, content_type, with_body)

    def _respond(self, path: str) -> tuple[int, bytes, str]:
        health = self.server.health
        if path == "/health":
            report = health.report()
            return (200 if report.healthy else 503), _json(report.to_dict()), JSON
        if path == "/metrics":
            body, content_type = health.metrics(self.headers.get("Accept"))
            return 200, body, content_type
        return 404, _json({"error": "not found", "paths": PATHS}), JSON

    def _send(
        self, status: int, body: bytes, content_type: str, with_body: bool, allow: str = ""
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (malformed request, unknown method, header too long), as
        JSON like every other answer instead of its HTML page."""
        if code == HTTPStatus.NOT_IMPLEMENTED:  # no do_<METHOD>: a method other than GET, HEAD
            self._not_allowed()
            return
        self.close_connection = True
        self.log_message("code %d, message %s", code, message)
        error = message or HTTPStatus(code).phrase
        self._send(code, _json({"error": error}), JSON, with_body=self.command != "HEAD")

    def _discard_body(self) -> None:
        """Read a request body we will not use, so that closing the connection does not reset
        it under the client before it has read our answer."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= MAX_DISCARDED_BODY:
            self.rfile.read(length)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # requestline, not path: a request too malformed to parse has no path.
        self.server.health.log.debug("health_request", request=self.requestline, status=str(code))

    def log_message(self, format: str, *args: Any) -> None:
        # Everything else http.server would print on stderr (malformed requests, timeouts).
        self.server.health.log.debug("health_request_rejected", message=format % args)


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1).encode() + b"\n"


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at fork time
    endpoint = _endpoint
    if endpoint is not None and endpoint.server is not None:
        endpoint.server._forget_after_fork()


def _stop_at_exit() -> None:
    endpoint = _endpoint
    if endpoint is not None and endpoint.server is not None and endpoint.pid == os.getpid():
        endpoint.server.stop()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_at_exit)
