"""Real Celery workers with a client, for end-to-end tests: the reference application's
(Harness: with a task store and a subscriber) and the tests' own apps' (AppWorker)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from celery import Celery

from notifier.testing import EventCollector, RedisServer, wait_until
from tasks.launcher import CHECKOUT, WorkerProcess, client
from tasks.store import TaskStore

from apps.celery_apps import ENV_BROKER

TESTS = Path(__file__).resolve().parents[1]  # tests/: the import root of support/ and apps/


class Harness:
    """A worker, a client, a store and a subscriber on one Redis and one database."""

    def __init__(self, redis: RedisServer, db_url: str, tmp: Path, **worker: Any) -> None:
        self.redis_url = redis.url
        self.store = TaskStore(db_url)
        self.config = tmp / f"config-{uuid.uuid4().hex[:6]}.toml"
        notifier_url = worker.pop("notifier_url", redis.url)
        celery_table = worker.pop("celery_table", "")
        extra_toml = worker.pop("extra_toml", "")  # more tables, e.g. [health]
        publish_timeout = worker.pop("publish_timeout", 1.0)
        # Off by default: these tests check each step's progress event of the workflows.
        progress_interval = worker.pop("progress_interval", 0.0)
        self.config.write_text(
            f'[database]\nurl = "{db_url}"\n'
            f'[celery]\nbroker_url = "{redis.url}"\nresult_backend = "{redis.url}"\n'
            f"{celery_table}\n"
            f"[redis]\nconnect_timeout = 1.0\npublish_timeout = {publish_timeout}\n"
            f"[queue]\nprogress_interval = {progress_interval}\n"
            "[reconnect]\ninitial_backoff = 0.01\nmax_backoff = 0.2\n"
            f"{extra_toml}\n"
        )
        env = {"NOTIFIER_CONFIG": str(self.config), "NOTIFIER_REDIS_URL": notifier_url}
        # Each worker process's final counters, as whole lines (tasks/reports.py).
        report_file = str(tmp / f"reports-{uuid.uuid4().hex[:6]}.jsonl")
        self.worker = WorkerProcess(env, report_file=report_file, **worker)
        self.app: Celery = client(redis.url)
        self.collector = EventCollector(redis.url)

    def __enter__(self) -> Harness:
        self.collector.start()
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.collector.close()
        self.app.close()
        self.store.close()

    def new_task(self, steps: list[str], review_after: int | None = None) -> str:
        task_id = f"wf-{uuid.uuid4().hex[:10]}"
        self.store.create_task(task_id, steps, review_after=review_after)
        return task_id

    def run(self, name: str, *args: Any, timeout: float = 30) -> dict[str, Any]:
        result: dict[str, Any] = self.send(name, *args).get(timeout=timeout)
        return result

    def run_all(self, name: str, args: list[tuple[Any, ...]], timeout: float) -> list[Any]:
        """Send every task at once, then collect their results in order.

        The AsyncResult handles are dropped here, while the worker and Redis are still up: a
        handle collected later unsubscribes over a connection that may be gone, and the error it
        raises in __del__ would surface as an unraisable-exception warning in some later test.
        """
        pending = [self.send(name, *task_args) for task_args in args]
        results = [result.get(timeout=timeout) for result in pending]
        del pending
        return results

    def send(self, name: str, *args: Any) -> Any:
        return self.app.send_task(f"tasks.{name}", args=list(args), queue=self.worker.queue)

    def events(self, task_id: str, until_type: str | None = None) -> list[dict[str, Any]]:
        """The task's events; with ``until_type``, wait until one of that type has arrived."""

        def mine() -> list[dict[str, Any]]:
            return [e for e in self.collector.events if e["task_id"] == task_id]

        if until_type is not None:
            wait_until(lambda: any(e["type"] == until_type for e in mine()), 15)
        return mine()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


class AppWorker:
    """A worker on one of the tests' own apps (``app``: its module, ``apps.<name>``, configured
    by tests/apps/celery_apps.py), with ``redis`` as its broker and the notifier configured by
    the file ``config``; a client on the same broker. Both are stopped on leaving the ``with``
    block."""

    def __init__(
        self,
        app: str,
        redis: RedisServer,
        config: Path,
        env: Mapping[str, str] | None = None,
        **worker: Any,
    ) -> None:
        self.redis = redis
        environment = {
            "PYTHONPATH": os.pathsep.join([CHECKOUT, str(TESTS)]),  # tasks/, and apps/
            ENV_BROKER: redis.url,
            "NOTIFIER_CONFIG": str(config),
            **(env or {}),
        }
        self.process = WorkerProcess(environment, app=app, **worker)
        self.app: Celery = client(redis.url)

    def __enter__(self) -> Self:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()
        self.app.close()
