"""The Celery application: configured from config.toml, with the notifier wired in.

Start a worker with ``celery -A tasks.celery_app worker``. ``[celery]`` names the broker and the
result backend (default: the notifier's Redis), ``[database] url`` the task-status store.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from celery.exceptions import TimeLimitExceeded, WorkerLostError

import notifier
import notifier.celery
from tasks import reports
from tasks.logs import configure_logging
from tasks.runtime import close_worker_loops
from tasks.settings import load_settings
from tasks.store import TaskStore

settings = load_settings()

app = Celery("tasks", include=["tasks.workflow_resume_tasks"])
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


@signals.task_failure.connect
def _fail_workflows_of_lost_runs(
    sender: Any = None, exception: BaseException | None = None, args: Any = (), **_: Any
) -> None:
    """A run the worker's main process had to end: its child was killed (WorkerLostError) or
    stopped at the hard time limit. The run's own except block never ran, so the workflow's
    failure is recorded here, database first, then on the workflow's channel. Connected before
    install(), so that it runs before the notifier's own failed event for the Celery task id."""
    if isinstance(exception, WorkerLostError | TimeLimitExceeded) and args:
        from tasks.workflow_resume_tasks import mark_task_failed  # it imports this module

        mark_task_failed(str(args[0]), exception)


notifier.celery.install(app, settings.notifier, flush_on_task_end=settings.flush_on_task_end)

_store: tuple[int, TaskStore] | None = None


def get_store() -> TaskStore:
    """This process's task store. A forked child opens its own: database connections must not
    cross a fork."""
    global _store
    if _store is None or _store[0] != os.getpid():
        _store = (os.getpid(), TaskStore(settings.database_url))
    return _store[1]


@signals.worker_init.connect
def _configure_worker_logging(**_: Any) -> None:
    configure_logging("info")


@signals.worker_init.connect
def _report_worker_counters(**_: Any) -> None:
    # The worker's main process publishes too: with solo or threads, every event; with
    # prefork, the lifecycle events of the runs its children could not end (lost, killed).
    reports.report_at_close(notifier.get_notifier())


@signals.worker_process_init.connect
def _report_child_counters(**_: Any) -> None:
    reports.report_at_close(notifier.get_notifier())


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_loops(**_: Any) -> None:
    close_worker_loops()
