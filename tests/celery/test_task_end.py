"""The task-end wait of a prefork child, on a real notifier and Redis, without a worker: only the
task after which the child recycles waits for its events (``worker_max_tasks_per_child``), unless
``flush_on_task_end`` asks every task to."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from notifier import default
from notifier.celery import _Handlers
from notifier.testing import RedisServer

from support.helpers import lingering, make_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def handlers(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[_Handlers]:
    """The handlers of a child of a worker with worker_max_tasks_per_child=3, its default
    notifier lingering 1 s (the most there is) between batches."""
    config = make_config(redis_server.url, queue={"linger": 1.0, "progress_interval": 0.0})
    default.configure(config)
    handlers = _Handlers(config, flush_on_task_end=request.param)
    handlers.on_worker_init(sender=SimpleNamespace(max_tasks_per_child=3, pool_cls="prefork"))
    handlers.on_child_start()
    lingering(default.get_notifier())  # the next events wait for the linger
    yield handlers
    default.shutdown()
    default.configure(None)  # back to the lookup the other tests' processes start with


def _pending() -> int:
    return int(default.get_notifier().stats()["pending"])


@pytest.mark.parametrize("handlers", [False], indirect=True)
def test_a_task_goes_on_at_once_and_the_last_before_a_recycle_waits(handlers: _Handlers) -> None:
    for task in (1, 2):
        assert default.publish_progress(f"task-{task}", 100.0)
        handlers.on_task_end()  # returns at once: the event waits for the linger
        assert _pending() >= 1
    assert default.publish_progress("task-3", 100.0)
    handlers.on_task_end()  # the third of worker_max_tasks_per_child=3: waits until it is sent
    assert 0 == _pending()


@pytest.mark.parametrize("handlers", [True], indirect=True)
def test_flush_on_task_end_makes_every_task_wait(handlers: _Handlers) -> None:
    assert default.publish_progress("task-1", 100.0)
    handlers.on_task_end()
    assert 0 == _pending()
