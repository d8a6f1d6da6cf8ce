"""``create_app(config)``: the gateway as an ASGI app (Starlette), to run standalone or mount.

Routes, each for one task and each behind its token (``?token=`` or ``Authorization: Bearer``):

- ``GET /?task=<id>``: the page (progress bar, status, connection state) over SSE;
- ``GET /tasks/{id}/events``: Server-Sent Events, resumable with ``Last-Event-ID`` (or
  ``?last_event_id=``);
- ``WS /ws/tasks/{id}``: the same events as WebSocket text frames (``?last_event_id=`` too);
- ``GET /tasks/{id}/last``: the latest event as JSON, 404 when there is none;
- ``GET /workflows/{id}/events``, ``WS /ws/workflows/{id}``, ``GET /workflows/{id}/last``: the
  same for a workflow (``notifier.workflows``), behind a token for the workflow id.

A missing, garbled or expired token is 401, a valid one for another task 403; a WebSocket is
closed with 1008 for either. Without ``[gateway] secret`` there are no tokens: only loopback
clients are served then, unless ``allow_anonymous = true``. ``[gateway] max_connections`` caps
open streams (503, or WebSocket close 1013, beyond it). Who may read from where is the front
door's (``door.py``).

CORS: a page on an allowed other origin (``[gateway] allowed_origins``) gets its preflight
(``OPTIONS``) answered, and every response to it carries ``Access-Control-Allow-Origin``; a
listed origin also gets ``Access-Control-Allow-Credentials`` (the token cookie), one allowed
only by ``*`` never does. A preflight from any other origin is 403.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib.resources import files

import orjson
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from notifier.config import NotifierConfig
from notifier.gateway.door import MAX_TOKEN, FrontDoor, Origin, resume_id_problem
from notifier.gateway.hub import Hub
from notifier.gateway.subscription import UNAVAILABLE, Subscription
from notifier.gateway.tokens import Access, channel_id_problem, check_token
from notifier.gateway.transports import (
    RAW_SEND,
    Message,
    Receive,
    Scope,
    Send,
    serve_sse,
    serve_websocket,
)
from notifier.logs import Logger, get_logger
from notifier.workflows import ids as workflows


class Gateway:
    """The app's state: its configuration, its front door (``door.py``) and its hub (made in the
    serving loop at first use)."""

    def __init__(self, config: NotifierConfig) -> None:
        self.config = config
        self.log: Logger = get_logger(config.logging.level)
        self.door = FrontDoor(config.gateway)
        self._hub: Hub | None = None
        self.page = files("notifier.gateway").joinpath("page.html").read_bytes()
        self.client_js = files("notifier.gateway").joinpath("client.js").read_bytes()

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            self._hub = Hub(self.config, self.log)
        return self._hub

    async def close(self) -> None:
        if self._hub is not None:
            await self._hub.close()
            self._hub = None

    def refuse(self, conn: HTTPConnection, task_id: str) -> tuple[int, str] | None:
        """Why this connection may not read ``task_id`` (HTTP status, message); None if it
        may. Each refusal is logged once per client address and reason: an origin's as
        ``gateway_origin_refused`` (with the origin), any other as ``gateway_request_refused``."""
        refusal = self._refusal(conn, task_id)
        if refusal is None:
            return None
        status, reason = refusal
        client = self.door.client_of(conn)
        if reason == ORIGIN_REFUSED:
            shown = conn.headers.get("origin", "")[:200]
            if self.door.first_refusal(client, "origin " + shown):
                self.log.warning(
                    "gateway_origin_refused", origin=shown, client=client, task_id=task_id[:200]
                )
        elif self.door.first_refusal(client, reason):
            self.log.warning(
                "gateway_request_refused",
                status=status,
                reason=reason,
                client=client,
                task_id=task_id[:200],
            )
        return refusal

    def _refusal(self, conn: HTTPConnection, task_id: str) -> tuple[int, str] | None:
        origin = self.door.origin_of(conn)
        if origin is Origin.REFUSED:
            return 403, ORIGIN_REFUSED
        secret = self.config.gateway.secret
        if not secret:
            anonymous = self.door.anonymous_refusal(conn)
            return None if anonymous is None else (403, anonymous)
        # A page allowed only by "*" reads with the token it sends, never the browser's cookie.
        token = self.door.token_of(conn, cookie=origin.credentials)
        access = (
            Access.INVALID
            if token and len(token) > MAX_TOKEN
            else check_token(token, task_id, secret)
        )
        if access is Access.GRANTED:
            return None
        if access is Access.OTHER_TASK:
            return 403, "the token is for another task"
        if access is Access.MISSING:
            return 401, "a token is required (Authorization: Bearer, a cookie, or ?token=)"
        return 401, "the token is invalid or has expired"

    def admit(self, conn: HTTPConnection) -> tuple[str, str | None]:
        """Count a new stream for the connection's client: (its address, why not or None)."""
        client = self.door.client_of(conn)
        refusal = self.door.admit(client)
        if refusal is not None and self.door.first_refusal(client, refusal):
            self.log.warning("gateway_stream_refused", reason=refusal, client=client)
        return client, refusal

    def cors_headers(self, conn: HTTPConnection) -> list[tuple[bytes, bytes]]:
        """What lets a page on an allowed other origin read a response: none for a request
        from no page or from the gateway's own, nor for a refused origin."""
        origin = self.door.origin_of(conn)
        if origin is not Origin.LISTED and origin is not Origin.ANY:
            return []
        headers = [
            (b"access-control-allow-origin", conn.headers["origin"].encode("latin-1")),
            (b"access-control-expose-headers", b"Retry-After"),
        ]
        if origin is Origin.LISTED:
            headers.append((b"access-control-allow-credentials", b"true"))  # the cookie
        return headers

    def preflight(self, conn: HTTPConnection) -> Response:
        """The answer to an ``OPTIONS`` request: a CORS preflight from an allowed origin gets
        what its page may send; one from a refused origin 403."""
        cors = self.cors_headers(conn)
        if cors:
            response = Response(status_code=204, headers={**PREFLIGHT_HEADERS, "Vary": "Origin"})
            response.raw_headers.extend(cors)
            return response
        if self.door.origin_of(conn) is Origin.REFUSED:
            return _error(403, ORIGIN_REFUSED)
        return Response(status_code=204, headers={"Allow": ALLOWED_METHODS})


ORIGIN_REFUSED = "this page's origin may not read from the gateway"
ALLOWED_METHODS = "GET, OPTIONS"
VARY_ORIGIN = (b"vary", b"Origin")
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": ALLOWED_METHODS,
    # What watch() sends (the token, the id it resumes after), and what EventSource
    # replacements add; Accept is safelisted.
    "Access-Control-Allow-Headers": "Authorization, Last-Event-ID, Cache-Control",
    "Access-Control-Max-Age": "7200",  # Chromium's ceiling
    "Allow": ALLOWED_METHODS,
}


class _TaskIdConvertor(Convertor[str]):
    """A route's task id: any text, newlines and all, so that a bad id reaches the route and
    gets its 400 (Starlette's ``path`` stops at a newline: the request would be a bare 404)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task_id", _TaskIdConvertor())


def create_app(config: NotifierConfig) -> GatewayApp:
    """The gateway for one notifier configuration (Redis, channel prefix, history, [gateway])."""
    gateway = Gateway(config)
    routes = [
        Route("/", _Page(gateway)),
        Route("/client.js", _ClientScript(gateway)),
        Route("/tasks/{task_id:task_id}/events", _Events(gateway)),
        Route("/tasks/{task_id:task_id}/last", _Last(gateway)),
        WebSocketRoute("/ws/tasks/{task_id:task_id}", _Socket(gateway)),
        Route("/workflows/{workflow_id:task_id}/events", _Events(gateway)),
        Route("/workflows/{workflow_id:task_id}/last", _Last(gateway)),
        WebSocketRoute("/ws/workflows/{workflow_id:task_id}", _Socket(gateway)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield  # run standalone; mounted, the hub lives as long as the process
        await gateway.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return GatewayApp(app)


class GatewayApp:
    """The Starlette app, with the server's own ``send`` kept in the scope for the SSE body,
    and CORS in one place: preflights answered here, and the headers added to every response
    to an allowed other origin."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state
        self.gateway: Gateway = app.state.gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
            if scope["method"] == "OPTIONS":
                await self.gateway.preflight(HTTPConnection(scope))(scope, receive, send)
                return
            if any(name == b"origin" for name, _ in scope["headers"]):
                cors = self.gateway.cors_headers(HTTPConnection(scope))
                if cors:
                    send = _adding(cors, send)
        await self.app(scope, receive, send)


def _adding(headers: list[tuple[bytes, bytes]], send: Send) -> Send:
    """``send``, with ``headers`` added to the response's start, and ``Vary: Origin`` unless it
    varies already."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            own = list(message.get("headers", ()))
            vary = [] if any(name.lower() == b"vary" for name, _ in own) else [VARY_ORIGIN]
            message = {**message, "headers": [*own, *headers, *vary]}
        await send(message)

    return sending


class _Page:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        task_id = request.query_params.get("task", "")
        response: Response | None = _task_error(task_id) or _refused(self.gateway, request, task_id)
        if response is None:
            response = Response(
                self.gateway.page,
                media_type="text/html; charset=utf-8",
                headers={
                    "Cache-Control": "no-store",
                    "Referrer-Policy": "no-referrer",  # the token is in this page's URL
                    "Content-Security-Policy": (
                        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                        "style-src 'self' 'unsafe-inline'"
                    ),
                },
            )
        await response(scope, receive, send)


class _ClientScript:
    """The browser client (``watch()``), for ``import`` from the gateway's own origin; the same
    file is the npm package in clients/js/. Public code: no token."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = Response(
            self.gateway.client_js,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache", "Vary": "Origin"},
        )
        await response(scope, receive, send)


class _Events:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        task_id = _channel_id(request)
        last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        refused = (
            _task_error(task_id, request)
            or _refused(self.gateway, request, task_id)
            or _resume_error(last_id)
        )
        if refused is not None:
            await refused(scope, receive, send)
            return
        client, over = self.gateway.admit(request)
        if over is not None:
            status = 503 if over == "too many open streams" else 429
            await _error(status, over, {"Retry-After": "5"})(scope, receive, send)
            return
        cfg = self.gateway.config.gateway
        subscription = Subscription(self.gateway.hub, task_id, cfg.client_buffer)
        try:
            try:
                first = await subscription.open(last_id)
            except UNAVAILABLE:
                await _error(503, "Redis is unavailable", {"Retry-After": "2"})(
                    scope, receive, send
                )
                return
            await serve_sse(
                subscription,
                first,
                scope,
                receive,
                send,
                retry_ms=cfg.retry_ms,
                send_timeout=cfg.send_timeout,
            )
            if subscription.overflowed:
                self.gateway.log.warning("gateway_client_too_slow", task_id=task_id)
        finally:
            self.gateway.door.release(client)
            subscription.close()


class _Last:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        task_id = _channel_id(request)
        response: Response | None = _task_error(task_id, request) or _refused(
            self.gateway, request, task_id
        )
        if response is None:
            response = await self._latest(task_id)
        await response(scope, receive, send)

    async def _latest(self, task_id: str) -> Response:
        key = self.gateway.hub.naming.key(task_id).encode()
        try:
            latest = await self.gateway.hub.history.latest(key)
        except UNAVAILABLE as exc:
            self.gateway.hub.read_failed(exc)  # part of an outage: said once, with its end
            return _error(503, "Redis is unavailable")
        if latest is None:
            return _error(404, "no events for this task")
        return Response(
            latest[1], media_type="application/json", headers={"Cache-Control": "no-store"}
        )


class _Socket:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        task_id = _channel_id(websocket)
        last_id = websocket.query_params.get("last_event_id")
        refusal = (
            _task_error(task_id, websocket)
            or _refused(self.gateway, websocket, task_id)
            or _resume_error(last_id)
        )
        await websocket.accept()
        if refusal is not None:
            reason = orjson.loads(refusal.body)["error"]
            await websocket.close(code=1008, reason=str(reason)[:120])  # a close reason: 123 B
            return
        client, over = self.gateway.admit(websocket)
        if over is not None:
            await websocket.close(code=1013, reason=over)
            return
        cfg = self.gateway.config.gateway
        subscription = Subscription(self.gateway.hub, task_id, cfg.client_buffer)
        try:
            try:
                first = await subscription.open(last_id)
            except UNAVAILABLE:
                await websocket.close(code=1011, reason="Redis is unavailable")
                return
            await serve_websocket(subscription, first, websocket, send_timeout=cfg.send_timeout)
            if subscription.overflowed:
                self.gateway.log.warning("gateway_client_too_slow", task_id=task_id)
        finally:
            self.gateway.door.release(client)
            subscription.close()


def _channel_id(conn: HTTPConnection) -> str:
    """The id of the channel a route reads: its task id, or its workflow's channel id."""
    if "workflow_id" in conn.path_params:
        return workflows.PREFIX + str(conn.path_params["workflow_id"])
    return str(conn.path_params["task_id"])


def _task_error(task_id: str, conn: HTTPConnection | None = None) -> JSONResponse | None:
    """400 for a channel id no route reads: a bad id, or on a task route (and the page, which
    passes no ``conn``) one that names a workflow's channel."""
    workflow = conn is not None and "workflow_id" in conn.path_params
    problem = channel_id_problem(task_id, workflow=workflow)
    return None if problem is None else _error(400, problem)


def _resume_error(last_id: str | None) -> JSONResponse | None:
    problem = resume_id_problem(last_id)
    return None if problem is None else _error(400, problem)


def _refused(gateway: Gateway, conn: HTTPConnection, task_id: str) -> JSONResponse | None:
    refusal = gateway.refuse(conn, task_id)
    if refusal is None:
        return None
    status, message = refusal
    headers = {"WWW-Authenticate": 'Bearer realm="notifier-gateway"'} if status == 401 else None
    return _error(status, message, headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
