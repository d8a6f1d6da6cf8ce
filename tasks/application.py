"""The Celery application and the task store, configured from config.toml; no tasks, no wiring.

``[celery]`` names the broker and the result backend (default: the notifier's Redis),
``[database] url`` the task-status store. The tasks (``tasks/workflow_resume_tasks.py``) are built
on this module, and ``tasks/celery_app.py``, the module a worker loads, puts the two together.
"""

from __future__ import annotations

import os

from celery import Celery

from tasks.settings import load_settings
from tasks.store import TaskStore

settings = load_settings()

app = Celery("tasks")
app.conf.update(
    broker_url=settings.broker_url,
    result_backend=settings.result_backend,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    worker_prefetch_multiplier=1,  # workflows are long; don't let one child hoard them
    broker_connection_retry_on_startup=True,
)

_store: tuple[int, TaskStore] | None = None


def get_store() -> TaskStore:
    """This process's task store. A forked child opens its own: database connections must not
    cross a fork."""
    global _store
    if _store is None or _store[0] != os.getpid():
        _store = (os.getpid(), TaskStore(settings.database_url))
    return _store[1]
