"""The gateway's two transports over one ``Subscription``: Server-Sent Events and WebSocket.

SSE (``GET /tasks/{id}/events``) writes each entry as ``id: <stream id>``, ``event: <type>``,
``data: <the event's JSON>``, after a ``retry:`` hint; a comment line every
``[gateway] heartbeat_interval`` keeps proxies from closing a quiet stream. The response ends after
the terminal event; a client that reconnects after it gets 204, which stops an ``EventSource``.
WebSocket (``WS /ws/tasks/{id}``) sends each event as one JSON text frame and closes with 1000
after the terminal one.

A client whose buffer fills up (``[gateway] client_buffer`` entries it has not taken) is cut off
with the reason: an SSE ``event: overflow``, or WebSocket close code 1008. An ``EventSource``
then reconnects by itself and resumes from its last event id, so even that loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from notifier.aio import cancel_and_wait
from notifier.gateway.entries import Entry
from notifier.gateway.protocol import TRANSPORT
from notifier.gateway.subscription import Subscription

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RAW_SEND = "notifier.gateway.raw_send"  # the scope key of the server's own send (app.py)
ABORT_PATIENCE = 5.0  # seconds to wait for the server to see an aborted connection go
OVERFLOW_REASON = "client too slow: its buffer of unsent events is full"
OVERFLOW_FRAME = b'event: overflow\ndata: {"reason": "%s"}\n\n' % OVERFLOW_REASON.encode()
HEARTBEAT_FRAME = b": keep-alive\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass events on as they come
]


async def serve_sse(
    subscription: Subscription,
    first: list[Entry],
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    retry_ms: int,
    send_timeout: float,
) -> None:
    """Stream the subscription as ``text/event-stream`` until its terminal event, the client
    leaving, or the client falling too far behind (its buffer full, or nothing sent to it taken
    for ``send_timeout`` seconds). What is waiting goes out in one write. Run by ``notifier
    gateway``, live entries are written straight to the socket while it takes them
    (``subscriber.Sink``); the body otherwise goes through the server's own ``send``
    (``RAW_SEND``), past the framework's wrappers, which cost more than the write itself at
    thousands of events a second."""
    if subscription.ended_before:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    write = scope.get(RAW_SEND) or send
    transport = scope.get(TRANSPORT)
    sink = _Socket(transport) if transport is not None else None
    watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive, subscription))
    try:
        body, entries = b"retry: %d\n\n" % retry_ms, first
        while True:
            more, ended = _frames(entries, subscription)
            body += more
            if (body or ended) and not await _send_within(
                write, body, ended, send_timeout, subscription, transport, watcher
            ):
                return
            if ended or watcher.done():
                return
            next_entries = await subscription.next(sink)
            if watcher.done():
                return
            body, entries = (HEARTBEAT_FRAME, []) if next_entries is None else (b"", next_entries)
    finally:
        await cancel_and_wait(watcher)


def _frames(entries: list[Entry], subscription: Subscription) -> tuple[bytes, bool]:
    """The entries' SSE frames, up to the terminal one; and whether the stream ends with them
    (the terminal event, or the client's buffer overflowed: it is told why)."""
    frames = []
    for entry in entries:
        frames.append(entry.sse)
        if entry.terminal:
            return b"".join(frames), True
    if subscription.overflowed:
        frames.append(OVERFLOW_FRAME)
        return b"".join(frames), True
    return b"".join(frames), False


async def _send_within(
    write: Send,
    body: bytes,
    ended: bool,
    timeout: float,
    subscription: Subscription,
    transport: asyncio.Transport | None,
    watcher: asyncio.Task[None],
) -> bool:
    """Send one body chunk; False when the client took nothing for ``timeout`` seconds: it is
    cut off then, unsent bytes and all."""
    try:
        async with asyncio.timeout(timeout):
            await write({"type": "http.response.body", "body": body, "more_body": not ended})
    except TimeoutError:
        subscription.subscriber.overflowed = True
        await _abort(transport, watcher)
        return False
    return True


async def _abort(transport: asyncio.Transport | None, watcher: asyncio.Task[None]) -> None:
    """Cut a client off, unsent bytes and all, and wait until the server has seen it go (its
    stream counts toward the limits until then). Mounted in another server, there is no
    transport to abort: that server closes the connection as it sees fit."""
    if transport is not None:
        transport.abort()
        await asyncio.wait({watcher}, timeout=ABORT_PATIENCE)


class _Socket:
    """An SSE client's socket as a ``Sink``: ready while the bytes written before have gone to
    the kernel, so a client that does not keep up fills its buffer instead of our memory."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def ready(self) -> bool:
        return not self.transport.is_closing() and not self.transport.get_write_buffer_size()

    def write(self, chunk: bytes) -> None:
        self.transport.write(chunk)


async def _until_disconnect(receive: Receive, subscription: Subscription) -> None:
    """Wait for the client to leave, then wake the sender so that it stops at once."""
    while (await receive())["type"] != "http.disconnect":
        pass
    subscription.subscriber.wake()


async def serve_websocket(
    subscription: Subscription, first: list[Entry], websocket: WebSocket, *, send_timeout: float
) -> None:
    """Send each event as a JSON text frame; close with 1000 after the terminal one. A client
    that takes nothing for ``send_timeout`` seconds is dropped, as one whose buffer is full: its
    socket is aborted (a close frame would wait behind what it has not read, for good)."""
    if subscription.ended_before:
        await websocket.close(code=1000)
        return
    leave = asyncio.get_running_loop().create_task(_until_ws_disconnect(websocket, subscription))
    try:
        entries: list[Entry] | None = first
        while not leave.done():
            for entry in entries or ():
                try:
                    async with asyncio.timeout(send_timeout):
                        await websocket.send_text(entry.text)
                except TimeoutError:
                    subscription.subscriber.overflowed = True
                    await _abort(websocket.scope.get(TRANSPORT), leave)
                    return
                if entry.terminal:
                    await websocket.close(code=1000)
                    return
            if subscription.overflowed:
                await websocket.close(code=1008, reason=OVERFLOW_REASON[:120])
                return
            entries = await subscription.next()  # None: a heartbeat (uvicorn pings itself)
    except WebSocketDisconnect:
        return  # it left while we sent
    finally:
        await cancel_and_wait(leave, WebSocketDisconnect)


async def _until_ws_disconnect(websocket: WebSocket, subscription: Subscription) -> None:
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # whatever a client sends is ignored
    finally:
        subscription.subscriber.wake()
