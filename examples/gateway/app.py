"""The gateway's routes, on Starlette, over ``notifier.consumer``.

- ``GET /``: a small page that opens the WebSocket for a task and prints its events.
- ``WS /ws/tasks/{task_id}``: the task's events as JSON text frames, its history first, then live;
  closed with code 1000 after the terminal event (1008 for a malformed task id).
- ``GET /tasks/{task_id}/last``: the latest event as JSON; 404 when the task has no history.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from notifier import InvalidEvent, NotifierConfig
from notifier.consumer import last_event, subscribe

PAGE = Path(__file__).with_name("index.html")


def create_app(config: NotifierConfig) -> Starlette:
    """The gateway for one notifier configuration (Redis URL, channel prefix, history keys)."""
    page = PAGE.read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def last(request: Request) -> Response:
        try:
            event = await last_event(request.path_params["task_id"], config=config)
        except InvalidEvent as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except (RedisError, OSError, TimeoutError):
            return JSONResponse({"error": "Redis is unavailable"}, status_code=503)
        if event is None:
            return JSONResponse({"error": "no events for this task"}, status_code=404)
        return JSONResponse(event)

    async def stream(websocket: WebSocket) -> None:
        try:
            events = subscribe(websocket.path_params["task_id"], config=config)
        except InvalidEvent as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])  # a close frame's reason: 123 B
            return
        await websocket.accept()
        async with contextlib.aclosing(events):
            await _serve(websocket, events)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/tasks/{task_id:path}/last", last),
            WebSocketRoute("/ws/tasks/{task_id:path}", stream),
        ]
    )


async def _serve(websocket: WebSocket, events: AsyncGenerator[dict[str, Any], None]) -> None:
    """Forward events until the stream ends or the client leaves, whichever comes first.

    The client is listened to all along: one that leaves while its task is quiet must free its
    Redis connections now, not at the task's next event.
    """
    forward = asyncio.create_task(_forward(websocket, events))
    leave = asyncio.create_task(_until_disconnect(websocket))
    done, pending = await asyncio.wait({forward, leave}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, WebSocketDisconnect):
            raise error  # a client that left mid-send is normal; anything else is a bug


async def _forward(websocket: WebSocket, events: AsyncGenerator[dict[str, Any], None]) -> None:
    async for event in events:
        await websocket.send_text(orjson.dumps(event).decode())
    await websocket.close(code=1000)  # the terminal event was sent


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass  # the page sends nothing; whatever a client sends is ignored
