"""The Celery app behind the web examples (examples/fastapi_app.py, examples/flask_app.py): one
task written as for celery-progress, with the one import changed.

Run a worker with ``celery -A examples.celery_app worker``. The broker (and result backend) is
``$CELERY_BROKER_URL`` (default: a local Redis); the notifier reads its configuration as usual
(``$NOTIFIER_CONFIG``, ``$NOTIFIER_REDIS_URL``), with ``[history] enabled = true`` so that a page
opened late still sees the whole run.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import notifier.celery
from notifier.progress import ProgressRecorder  # was: from celery_progress.backend import ...

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("examples", broker=BROKER, backend=BROKER)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
notifier.celery.install(app)  # started, and one terminal event per run, on the task's channel


@app.task(bind=True, name="examples.count_rows")
def count_rows(self: Any, rows: int, pause: float = 0.05) -> dict[str, int]:
    """Count ``rows`` rows, one every ``pause`` seconds, reporting each one."""
    recorder = ProgressRecorder(self)
    for row in range(1, rows + 1):
        time.sleep(pause)  # the work
        recorder.set_progress(row, rows, description=f"row {row} of {rows}")
    return {"rows": rows}
