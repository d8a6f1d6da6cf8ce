"""``create_app(config)``: the gateway as an ASGI app (Starlette), to run standalone or mount.

Routes, each for one task and each behind its token (``?token=`` or ``Authorization: Bearer``):

- ``GET /?task=<id>``: the page (progress bar, status, connection state) over SSE;
- ``GET /tasks/{id}/events``: Server-Sent Events, resumable with ``Last-Event-ID`` (or
  ``?last_event_id=``);
- ``WS /ws/tasks/{id}``: the same events as WebSocket text frames (``?last_event_id=`` too);
- ``GET /tasks/{id}/last``: the latest event as JSON, 404 when there is none.

A missing, garbled or expired token is 401, a valid one for another task 403; a WebSocket is
closed with 1008 for either. Without ``[gateway] secret`` there are no tokens: only loopback
clients are served then, unless ``allow_anonymous = true``. ``[gateway] max_connections`` caps
open streams (503, or WebSocket close 1013, beyond it).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from importlib.resources import files

import orjson
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from notifier.config import NotifierConfig
from notifier.events import check_task_id
from notifier.exceptions import InvalidEvent
from notifier.gateway.hub import Hub
from notifier.gateway.subscription import UNAVAILABLE, Subscription
from notifier.gateway.tokens import Access, check_token
from notifier.gateway.transports import Receive, Scope, Send, serve_sse, serve_websocket
from notifier.logs import Logger, get_logger


class Gateway:
    """The app's state: its configuration, its hub (made in the serving loop at first use) and
    its count of open streams."""

    def __init__(self, config: NotifierConfig) -> None:
        self.config = config
        self.log: Logger = get_logger(config.logging.level)
        self.open_streams = 0
        self._hub: Hub | None = None
        self.page = files("notifier.gateway").joinpath("page.html").read_bytes()

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
        """Why this connection may not read ``task_id`` (HTTP status, message); None if it may."""
        secret = self.config.gateway.secret
        if not secret:
            if self.config.gateway.allow_anonymous or _loopback(conn):
                return None
            return 403, "no [gateway] secret is set: anonymous access is for loopback clients only"
        access = check_token(_token_of(conn), task_id, secret)
        if access is Access.GRANTED:
            return None
        if access is Access.OTHER_TASK:
            return 403, "the token is for another task"
        if access is Access.MISSING:
            return 401, "a token is required (?token= or Authorization: Bearer)"
        return 401, "the token is invalid or has expired"


def create_app(config: NotifierConfig) -> GatewayApp:
    """The gateway for one notifier configuration (Redis, channel prefix, history, [gateway])."""
    gateway = Gateway(config)
    routes = [
        Route("/", _Page(gateway)),
        Route("/tasks/{task_id:path}/events", _Events(gateway)),
        Route("/tasks/{task_id:path}/last", _Last(gateway)),
        WebSocketRoute("/ws/tasks/{task_id:path}", _Socket(gateway)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield  # run standalone; mounted, the hub lives as long as the process
        await gateway.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return GatewayApp(app)


RAW_SEND = "notifier.gateway.raw_send"


class GatewayApp:
    """The Starlette app, with the server's own ``send`` kept in the scope for the SSE body."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


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


class _Events:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        task_id = request.path_params["task_id"]
        refused = _task_error(task_id) or _refused(self.gateway, request, task_id)
        if (
            refused is None
            and self.gateway.open_streams >= self.gateway.config.gateway.max_connections
        ):
            refused = _error(503, "too many open streams", {"Retry-After": "5"})
        if refused is not None:
            await refused(scope, receive, send)
            return
        last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        cfg = self.gateway.config.gateway
        subscription = Subscription(self.gateway.hub, task_id, cfg.client_buffer)
        self.gateway.open_streams += 1
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
                receive,
                send,
                retry_ms=cfg.retry_ms,
                raw_send=scope.get(RAW_SEND),
            )
            if subscription.overflowed:
                self.gateway.log.warning("gateway_client_too_slow", task_id=task_id)
        finally:
            self.gateway.open_streams -= 1
            subscription.close()


class _Last:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        task_id = request.path_params["task_id"]
        response: Response | None = _task_error(task_id) or _refused(self.gateway, request, task_id)
        if response is None:
            response = await self._latest(task_id)
        await response(scope, receive, send)

    async def _latest(self, task_id: str) -> Response:
        key = self.gateway.hub.naming.key(task_id).encode()
        try:
            latest = await self.gateway.hub.history.latest(key)
        except UNAVAILABLE:
            return _error(503, "Redis is unavailable")
        if latest is None:
            return _error(404, "no events for this task")
        return Response(latest[1], media_type="application/json")


class _Socket:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        task_id = websocket.path_params["task_id"]
        refusal = _task_error(task_id) or _refused(self.gateway, websocket, task_id)
        await websocket.accept()
        if refusal is not None:
            reason = orjson.loads(refusal.body)["error"]
            await websocket.close(code=1008, reason=str(reason)[:120])  # a close reason: 123 B
            return
        cfg = self.gateway.config.gateway
        if self.gateway.open_streams >= cfg.max_connections:
            await websocket.close(code=1013, reason="too many open streams")
            return
        subscription = Subscription(self.gateway.hub, task_id, cfg.client_buffer)
        self.gateway.open_streams += 1
        try:
            try:
                first = await subscription.open(websocket.query_params.get("last_event_id"))
            except UNAVAILABLE:
                await websocket.close(code=1011, reason="Redis is unavailable")
                return
            await serve_websocket(subscription, first, websocket)
            if subscription.overflowed:
                self.gateway.log.warning("gateway_client_too_slow", task_id=task_id)
        finally:
            self.gateway.open_streams -= 1
            subscription.close()


def _token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.query_params.get("token") or None


def _loopback(conn: HTTPConnection) -> bool:
    client = conn.client
    if client is None:
        return False
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(client.host).is_loopback
    return client.host == "localhost"


def _task_error(task_id: str) -> JSONResponse | None:
    try:
        check_task_id(task_id)
    except InvalidEvent as exc:
        return _error(400, str(exc))
    return None


def _refused(gateway: Gateway, conn: HTTPConnection, task_id: str) -> JSONResponse | None:
    refusal = gateway.refuse(conn, task_id)
    if refusal is None:
        return None
    status, message = refusal
    headers = {"WWW-Authenticate": 'Bearer realm="notifier-gateway"'} if status == 401 else None
    return _error(status, message, headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
