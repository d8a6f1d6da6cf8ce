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
from notifier.gateway.subscription import Subscription

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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
    receive: Receive,
    send: Send,
    *,
    retry_ms: int,
    raw_send: Send | None = None,
) -> None:
    """Stream the subscription as ``text/event-stream`` until its terminal event, the client
    leaving, or the client falling too far behind. ``raw_send``: the server's own send, for the
    body chunks, past the framework's wrappers (they only watch for the response's start, and
    cost more than the write itself at thousands of events a second)."""
    if subscription.ended_before:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    write = raw_send or send
    watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive, subscription))
    try:
        body, entries = b"retry: %d\n\n" % retry_ms, first
        while True:
            ended = False
            for entry in entries:
                body += entry.sse
                if entry.terminal:
                    ended = True
                    break
            if subscription.overflowed:
                body += OVERFLOW_FRAME
                ended = True
            if body or ended:
                await write({"type": "http.response.body", "body": body, "more_body": not ended})
            if ended or watcher.done():
                return
            next_entries = await subscription.next()
            if watcher.done():
                return
            body, entries = (HEARTBEAT_FRAME, []) if next_entries is None else (b"", next_entries)
    finally:
        await cancel_and_wait(watcher)


async def _until_disconnect(receive: Receive, subscription: Subscription) -> None:
    """Wait for the client to leave, then wake the sender so that it stops at once."""
    while (await receive())["type"] != "http.disconnect":
        pass
    subscription.subscriber.wake()


async def serve_websocket(
    subscription: Subscription, first: list[Entry], websocket: WebSocket
) -> None:
    """Send each event as a JSON text frame; close with 1000 after the terminal one."""
    if subscription.ended_before:
        await websocket.close(code=1000)
        return
    leave = asyncio.get_running_loop().create_task(_until_ws_disconnect(websocket, subscription))
    try:
        entries: list[Entry] | None = first
        while not leave.done():
            for entry in entries or ():
                await websocket.send_text(entry.payload.decode())
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
