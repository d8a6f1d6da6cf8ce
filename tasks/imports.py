"""A chord for the demo: import files in parallel, then summarise, one channel for the whole job.

``import_job(files, failing, queue)`` is the canvas a web application would apply: a chord of
``tasks.import_file``, one per file, whose callback ``tasks.summarise_imports`` runs only when all
of them succeeded. With ``notifier.celery.install(app)`` the job has a workflow channel
(``notifier.workflows``): ``workflow_id(result)`` names it, and its events carry how many files
are done, failed and running, and the job's mean progress.
"""

from __future__ import annotations

import time
from typing import Any

from celery import chord
from celery.result import AsyncResult

import notifier
from tasks.application import app


class ImportFailed(RuntimeError):
    """A file that cannot be imported."""


@app.task(name="tasks.import_file", bind=True)
def import_file(self: Any, name: str, seconds: float, fail: bool) -> int:
    notifier.publish_progress(self.request.id, 50, message=f"{name}: half read")
    time.sleep(seconds)
    if fail:
        raise ImportFailed(f"{name}: line 12 is not valid CSV")
    return len(name)


@app.task(name="tasks.summarise_imports")
def summarise_imports(sizes: list[int]) -> dict[str, int]:
    return {"files": len(sizes), "bytes": sum(sizes)}


def import_job(files: list[str], failing: str | None, queue: str) -> AsyncResult:
    """Apply the chord on ``queue``; the callback's result (its parent is the header group)."""
    header = [
        import_file.s(name, 0.1 + 0.05 * i, name == failing).set(queue=queue)
        for i, name in enumerate(files)
    ]
    result: AsyncResult = chord(header)(summarise_imports.s().set(queue=queue))
    return result
