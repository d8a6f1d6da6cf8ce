"""The notifier gateway mounted in a FastAPI application, next to the route that starts a job.

The backend enqueues the work and hands the browser three things: the task id, its token, and
the page (or the SSE URL) to follow it with. Run it with ``uvicorn examples.fastapi_mount:app``
(``[gateway] secret`` or ``$NOTIFIER_GATEWAY_SECRET`` must be set to issue tokens).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

from notifier import load_config
from notifier.gateway import create_app, issue_token

config = load_config()
gateway = create_app(config)
app = FastAPI()
app.mount("/notifications", gateway)


@app.post("/jobs")
def start_job() -> dict[str, Any]:
    task_id = f"job-{uuid.uuid4().hex[:12]}"
    # ... enqueue the Celery task here, e.g. start_workflow.apply_async(task_id=task_id) ...
    token = issue_token(task_id, config=config, ttl=3600)
    return {
        "task_id": task_id,
        "token": token,
        "page": f"/notifications/?task={task_id}&token={token}",
        "events": f"/notifications/tasks/{task_id}/events?token={token}",
    }
