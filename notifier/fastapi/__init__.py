"""notifier.fastapi: the notifier in a FastAPI (or any Starlette) application.

- ``lifespan``: starts the process's default notifier with the app and, when the app stops,
  closes the gateways mounted in it and drains the notifier without blocking the loop
  (``FastAPI(lifespan=notifier.fastapi.lifespan)``, or entered from the app's own lifespan).
- ``task_token(can_watch)``: a dependency that mints a gateway token for the task named by the
  route's ``task_id``, once the application's own check says the caller may watch it; 403 when
  it says no.

The gateway itself is mounted as usual: ``app.mount("/notifications", create_app(config))``.
Needs the ``fastapi`` extra (FastAPI and the gateway's Starlette).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request

from notifier import default
from notifier.config import NotifierConfig
from notifier.exceptions import InvalidEvent
from notifier.gateway.lifespan import lifespan
from notifier.gateway.tokens import issue_token

# can_watch(request, task_id): whether the caller of ``request`` may follow ``task_id``.
CanWatch = Callable[[Request, str], bool | Awaitable[bool]]


def task_token(
    can_watch: CanWatch, *, ttl: float = 3600, config: NotifierConfig | None = None
) -> Callable[[Request, str], Awaitable[str]]:
    """A dependency that answers a gateway token for the route's ``task_id``, valid ``ttl``
    seconds, when ``can_watch(request, task_id)`` (a function or a coroutine function) is true;
    403 when it is false, 400 for an id that cannot name a task. ``config`` holds the gateway's
    secret: the default notifier's configuration unless given.

    ``TaskToken = Annotated[str, Depends(task_token(owns_task))]``, then a route with a
    ``task_id`` path parameter takes ``token: TaskToken``.
    """

    async def token(request: Request, task_id: str) -> str:
        allowed = can_watch(request, task_id)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            raise HTTPException(403, "you may not watch this task")
        signing = config if config is not None else default.get_notifier().config
        try:
            return issue_token(task_id, config=signing, ttl=ttl)
        except InvalidEvent as exc:  # an id no task can have, or a workflow's channel
            raise HTTPException(400, str(exc)) from None

    return token


__all__ = ["CanWatch", "lifespan", "task_token"]
