"""notifier.progress.ProgressRecorder: celery-progress's recorder, publishing each call as a
progress event on the task's channel (and still storing celery-progress's PROGRESS state)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from notifier import Notifier, load_config
from notifier.consumer import subscribe
from notifier.progress import PROGRESS_STATE, ProgressRecorder
from notifier.testing import EventCollector, RedisServer

from support.celery import AppWorker

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def config_path(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """History on (the test reads the run from its start); every progress event sent, none
    coalesced, so that each set_progress call shows."""
    path = tmp_path_factory.mktemp("progress") / "config.toml"
    path.write_text(
        f'[redis]\nurl = "{redis.url}"\nconnect_timeout = 1.0\n'
        "[queue]\nprogress_interval = 0.0\n"
        "[history]\nenabled = true\n"
    )
    return path


@pytest.fixture(scope="module")
def worker(redis: RedisServer, config_path: Path) -> Iterator[AppWorker]:
    """A prefork worker running examples/celery_app.py."""
    env = {"CELERY_BROKER_URL": redis.url, "NOTIFIER_REDIS_URL": redis.url}
    with AppWorker("examples.celery_app", redis, config_path, env, concurrency=1) as w:
        yield w


def test_every_set_progress_reaches_the_tasks_channel_the_last_at_100(
    worker: AppWorker, config_path: Path
) -> None:
    """A celery-progress style task on a real worker: each set_progress(current, total,
    description) is a progress event with the percent, current, total and description."""
    task_id = str(uuid.uuid4())
    worker.app.send_task(
        "examples.count_rows", args=[6, 0.0], task_id=task_id, queue=worker.process.queue
    )
    config = load_config(config_path)

    async def follow() -> list[dict[str, Any]]:
        async with asyncio.timeout(30):
            return [event async for event in subscribe(task_id, config=config)]

    events = asyncio.run(follow())
    progress = [e["data"] for e in events if e["type"] == "progress"]
    expected = [
        {
            "progress": round(row / 6 * 100, 2),
            "message": f"row {row} of 6",
            "current": row,
            "total": 6,
        }
        for row in range(1, 7)
    ]
    assert expected == progress
    assert 100.0 == progress[-1]["progress"]
    assert ["started", *["progress"] * 6, "completed"] == [e["type"] for e in events]
    assert {"rows": 6} == events[-1]["data"]["result"]


def eager_task(app: Celery, calls: list[tuple[float, float, str]], **options: Any) -> Any:
    """A bound task that makes ``calls`` to a ProgressRecorder; returns what the last returned
    and the state the result backend holds then."""

    @app.task(bind=True, name=f"eager.{uuid.uuid4().hex[:6]}")
    def report(self: Any) -> Any:
        recorder = ProgressRecorder(self, **options)
        returned: Any = None
        for current, total, description in calls:
            returned = recorder.set_progress(current, total, description)
        stored = self.AsyncResult(self.request.id)
        return returned, stored.state, stored.info

    return report


def test_set_progress_returns_and_stores_what_celery_progress_does(
    redis: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """set_progress returns celery-progress's (state, meta) and stores that meta as the task's
    PROGRESS state, so that a page still polling celery-progress's endpoint keeps working."""
    app = Celery("eager", broker=redis.url, backend=redis.url)
    collector = EventCollector(redis.url).start()
    try:
        n = notifier_factory(redis.url)
        task = eager_task(app, [(1, 3, "a third"), (0, 0, "")], notifier=n)
        result = task.apply()
        assert n.flush(5)
        published = [e["data"] for e in collector.wait_for(2) if e["task_id"] == result.id]
    finally:
        collector.close()
        app.close()
    meta = {"pending": False, "current": 0, "total": 0, "percent": 0.0, "description": ""}
    returned, state, info = result.get()
    assert (PROGRESS_STATE, meta) == tuple(returned)
    assert (PROGRESS_STATE, meta) == (state, info)
    assert [
        {"progress": 33.33, "message": "a third", "current": 1, "total": 3},
        {"progress": 0.0, "message": None, "current": 0, "total": 0},
    ] == published


def test_update_state_false_publishes_without_writing_the_result_backend(
    redis: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """With update_state=False the recorder only publishes: the backend holds no state."""
    app = Celery("eager", broker=redis.url, backend=redis.url)
    try:
        n = notifier_factory(redis.url)
        task = eager_task(app, [(5, 10, "half")], notifier=n, update_state=False)
        returned, state, _ = task.apply().get()
        assert n.flush(5)
    finally:
        app.close()
    assert "PENDING" == state
    assert 50.0 == returned[1]["percent"]
    assert 1 == n.stats()["published"]
