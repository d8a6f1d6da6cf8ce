"""What a worker loads: the Celery app with its tasks, the notifier wired in, the worker's logs.

Start a worker with ``celery -A tasks.celery_app worker``. The app and the task store are
configured in ``tasks/application.py``, the tasks defined in ``tasks/workflow_resume_tasks.py``
and ``tasks/imports.py`` (a chord); this module imports them all, so a worker registers the
tasks, and none of them knows it.
"""

from __future__ import annotations

from typing import Any

from celery import signals
from celery.exceptions import TimeLimitExceeded, WorkerLostError

import notifier
import notifier.celery
from tasks import imports, reports
from tasks.application import app, settings
from tasks.logs import configure_logging
from tasks.runtime import close_worker_loops
from tasks.workflow_resume_tasks import mark_task_failed

__all__ = ["app", "imports"]  # what ``celery -A tasks.celery_app`` looks up; the chord's tasks


@signals.task_failure.connect
def _fail_workflows_of_lost_runs(
    sender: Any = None, exception: BaseException | None = None, args: Any = (), **_: Any
) -> None:
    """A run the worker's main process had to end: its child was killed (WorkerLostError) or
    stopped at the hard time limit. The run's own except block never ran, so the workflow's
    failure is recorded here, database first, then on the workflow's channel. Connected before
    install(), so that it runs before the notifier's own failed event for the Celery task id."""
    if isinstance(exception, WorkerLostError | TimeLimitExceeded) and args:
        mark_task_failed(str(args[0]), exception)


notifier.celery.install(app, settings.notifier, flush_on_task_end=settings.flush_on_task_end)


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
