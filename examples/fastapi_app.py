"""A FastAPI application that starts a Celery task and lets the browser follow it to its end.

- ``lifespan`` starts the notifier with the app and drains it, awaited, when the app stops;
- the gateway is mounted under ``/notifications`` (one origin for the page and its events);
- ``POST /jobs`` publishes a ``queued`` event and sends ``examples.count_rows`` to the workers;
- ``GET /jobs/{task_id}/token`` mints the gateway token for a task the visitor started
  (``task_token``: 403 for anyone else's).

Run it with ``uvicorn examples.fastapi_app:app`` beside ``celery -A examples.celery_app worker``,
with ``$NOTIFIER_GATEWAY_SECRET`` (tokens), ``$CELERY_BROKER_URL`` and the notifier's usual
configuration (``[history] enabled = true``), then open ``/``.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

import notifier
from examples.celery_app import count_rows
from notifier.fastapi import lifespan, task_token
from notifier.gateway import create_app

PAGE = (Path(__file__).parent / "progress.html").read_text()
VISITOR = "visitor"  # the cookie that stands in for the application's own login here

app = FastAPI(lifespan=lifespan)
app.mount("/notifications", create_app(notifier.get_notifier().config))
owners: dict[str, str] = {}  # task id -> the visitor who started it (the app's database)


def owns(request: Request, task_id: str) -> bool:
    """The application's own check: may the caller watch this task?"""
    visitor = request.cookies.get(VISITOR)
    return visitor is not None and owners.get(task_id) == visitor


TaskToken = Annotated[str, Depends(task_token(owns))]


@app.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    response = HTMLResponse(PAGE)
    if VISITOR not in request.cookies:
        response.set_cookie(VISITOR, secrets.token_urlsafe(16), httponly=True, samesite="strict")
    return response


@app.post("/jobs")
def start_job(request: Request, rows: int = 20) -> dict[str, str]:
    task_id = str(uuid.uuid4())
    owners[task_id] = request.cookies.get(VISITOR, "")
    notifier.publish(task_id, "queued", {"rows": rows})  # never blocks, never raises for Redis
    count_rows.apply_async(args=[rows], task_id=task_id)
    return {"task_id": task_id}


@app.get("/jobs/{task_id}/token", response_class=PlainTextResponse)
def job_token(token: TaskToken) -> str:
    return token
