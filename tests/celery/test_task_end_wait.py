"""The task-end wait of notifier.celery's wiring, on its receivers with a real notifier behind a
slow link: a prefork child waits for its notifications only at the end of the task it is
recycled after (worker_max_tasks_per_child); its other tasks end at once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import notifier as default
import notifier.celery
from notifier.celery import TASK_EVENTS_INTERVAL, _Handlers
from notifier.testing import RedisServer, wait_until

from support.faultproxy import FaultProxy
from support.helpers import make_config

pytestmark = pytest.mark.timeout(60)
LINK_LATENCY = 0.5  # each way: an event takes a second to be settled, far above any stall here


class PreforkWorker:
    """What worker_init's sender tells: a prefork pool recycling each child after 2 tasks."""

    pool_cls = "prefork"
    max_tasks_per_child = 2


def test_only_the_task_a_child_is_recycled_after_waits_for_its_notifications(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """worker_max_tasks_per_child=2: the first task's end leaves its event in flight; the
    second's returns once every event of the child is in Redis."""
    monkeypatch.setattr(notifier.celery, "TASK_END_FLUSH_TIMEOUT", 30.0)  # never the bound here
    proxy = proxy_factory(redis_server)
    default.configure(make_config(proxy.url, redis={"publish_timeout": 10.0}))
    handlers = _Handlers(default.get_notifier().config, flush_on_task_end=True)
    try:
        handlers.on_worker_init(sender=PreforkWorker())
        handlers.on_child_start()
        n = default.get_notifier()
        assert n._sender is not None and TASK_EVENTS_INTERVAL == n._sender.poll_interval
        wait_until(lambda: n.stats()["connected"], 10)
        proxy.latency(LINK_LATENCY)
        for task in (1, 2, 3):
            assert default.publish(f"wait-{task}", "completed")
            handlers.on_task_end()
            waited = 0 == n.stats()["pending"]
            assert (task == 2) == waited, task  # the 2nd is the child's last, of 2
    finally:
        default.shutdown()
