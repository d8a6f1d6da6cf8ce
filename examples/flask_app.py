"""A Flask application and the gateway on one origin, under one ASGI server.

a2wsgi's ``WSGIMiddleware`` runs the Flask app (on a thread pool) as an ASGI app; a Starlette
app routes ``/notifications`` to the gateway and everything else to Flask. The Flask code is
plain Flask: ``POST /jobs`` publishes a ``queued`` event and sends ``examples.count_rows`` to the
workers; ``GET /jobs/<task_id>/token`` mints the gateway token for a task the visitor started
(403 for anyone else's).

Run it with ``uvicorn examples.flask_app:app`` beside ``celery -A examples.celery_app worker``,
with ``$NOTIFIER_GATEWAY_SECRET`` (tokens), ``$CELERY_BROKER_URL`` and the notifier's usual
configuration (``[history] enabled = true``), then open ``/``.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

from a2wsgi import WSGIMiddleware
from flask import Flask, Response, abort, request
from starlette.applications import Starlette
from starlette.routing import Mount

import notifier
from examples.celery_app import count_rows
from notifier.fastapi import lifespan
from notifier.gateway import create_app, issue_token

PAGE = (Path(__file__).parent / "progress.html").read_text()
VISITOR = "visitor"  # the cookie that stands in for the application's own login here
config = notifier.get_notifier().config

flask_app = Flask(__name__)
owners: dict[str, str] = {}  # task id -> the visitor who started it (the app's database)


@flask_app.get("/")
def home() -> Response:
    response = Response(PAGE, mimetype="text/html")
    if VISITOR not in request.cookies:
        response.set_cookie(VISITOR, secrets.token_urlsafe(16), httponly=True, samesite="Strict")
    return response


@flask_app.post("/jobs")
def start_job() -> dict[str, str]:
    task_id = str(uuid.uuid4())
    rows = request.args.get("rows", 20, type=int)
    owners[task_id] = request.cookies.get(VISITOR, "")
    notifier.publish(task_id, "queued", {"rows": rows})  # never blocks, never raises for Redis
    count_rows.apply_async(args=[rows], task_id=task_id)
    return {"task_id": task_id}


@flask_app.get("/jobs/<task_id>/token")
def job_token(task_id: str) -> Response:
    visitor = request.cookies.get(VISITOR)
    if visitor is None or owners.get(task_id) != visitor:
        abort(403)
    return Response(issue_token(task_id, config=config, ttl=3600), mimetype="text/plain")


# One origin: the gateway under /notifications, Flask for the rest. The lifespan starts the
# notifier and drains it, awaited, when the server stops.
app = Starlette(
    routes=[
        Mount("/notifications", create_app(config)),
        Mount("/", WSGIMiddleware(flask_app)),  # type: ignore[arg-type]
    ],
    lifespan=lifespan,
)
