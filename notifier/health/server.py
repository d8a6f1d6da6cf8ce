"""The health endpoint's HTTP server: GET /health (200 or 503, JSON) and GET /metrics.

It answers from the heartbeat snapshots in its directory (``report`` judges them), on a daemon
thread. Which process runs it, and when, is ``notifier.health``'s business.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from notifier.config import NotifierConfig
from notifier.health import metrics
from notifier.health.report import Report, read_report
from notifier.logs import get_logger

PATHS = ("/health", "/metrics")
ALLOWED = "GET, HEAD"
JSON = "application/json"
REQUEST_TIMEOUT = 10.0  # a client that stalls mid-request gives its thread back after this
POLL_INTERVAL = 0.2  # how long stop() may wait for the serving loop to notice
MAX_DISCARDED_BODY = 1 << 16


class HealthServer:
    """Answers GET /health and GET /metrics from the snapshots in ``directory``, on a daemon
    thread named ``notifier-health``. Made by :func:`serve`; stopped by :meth:`stop` or at exit.
    """

    def __init__(self, config: NotifierConfig) -> None:
        health = config.health
        self.log = get_logger(config.logging.level)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._stopped = False
        self._stop_listeners: list[Callable[[HealthServer], None]] = []
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

    def on_stop(self, listener: Callable[[HealthServer], None]) -> None:
        """Call ``listener(server)`` when :meth:`stop` begins (the endpoint forgets it)."""
        self._stop_listeners.append(listener)

    def stop(self) -> None:
        """Stop serving and remove the snapshot directory if it made it. Idempotent; does
        nothing in a forked child (the server is its parent's)."""
        if self._pid != os.getpid():
            return
        for listener in self._stop_listeners:
            listener(self)
        with self._lock:
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

    def forget_after_fork(self) -> None:
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
