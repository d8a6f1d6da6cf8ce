"""How the tests' own Celery apps (tests/apps/gevent_app.py, lifecycle_app.py, workflow_app.py)
are configured.

A worker imports this module as ``apps.celery_apps``, with tests/ on its PYTHONPATH (the test
puts it there), and finds its broker in $TEST_APP_BROKER (the test's Redis); the app's own module
adds its tasks and installs the notifier as it likes. tests/support/celery.py starts such a
worker (AppWorker).
"""

from __future__ import annotations

import os

from celery import Celery

ENV_BROKER = "TEST_APP_BROKER"  # set by the test, read by the worker
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def broker_url() -> str:
    """The broker the test named, also the result backend."""
    return os.environ.get(ENV_BROKER, DEFAULT_BROKER)


def celery_test_app(name: str) -> Celery:
    """A Celery app called ``name`` on the test's broker: JSON only, and one task at a time per
    worker process, so that a test's runs are not taken ahead of time by one busy process."""
    broker = broker_url()
    app = Celery(name, broker=broker, backend=broker)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    return app
