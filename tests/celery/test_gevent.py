"""The gevent pool: a real ``celery worker -P gevent -c 100`` running tests/apps/gevent_app.py. The
notifier thread is a real OS thread there, off the worker's hub; every event arrives, through a
Redis reset too, the hub stays responsive, and the worker drains at exit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier.celery import _Handlers
from notifier.config import NotifierConfig
from notifier.testing import RedisServer, free_port, wait_until

from support.celery import AppWorker
from support.faultproxy import FaultProxy
from support.faults import report
from support.health import health_report

pytestmark = pytest.mark.timeout(240)
# The hub must never stall for anything like a network wait; a loaded 2-core machine stalls
# any thread for tens of milliseconds, so this bound is far above that noise. The p99 against
# the 5 ms target is measured and reported (and by `make bench-gevent`), not asserted.
HUB_NEVER_STALLS = 0.5


class GeventWorker(AppWorker):
    """``celery worker -P gevent -c 100`` on tests/apps/gevent_app.py; the notifier publishes to
    ``notifier_url`` (a fault proxy in one test), the broker is Redis itself."""

    def __init__(self, redis: RedisServer, tmp: Path, notifier_url: str) -> None:
        self.health_port = free_port()
        config = tmp / "config.toml"
        config.write_text(
            f'[redis]\nurl = "{notifier_url}"\nconnect_timeout = 1.0\npublish_timeout = 1.0\n'
            "[reconnect]\ninitial_backoff = 0.01\nmax_backoff = 0.2\n"
            "[queue]\nprogress_interval = 0\nmaxsize = 100000\n"
            "[history]\nenabled = true\nmaxlen = 100000\n"
            f"[health]\nenabled = true\nport = {self.health_port}\n"
        )
        super().__init__(
            "apps.gevent_app",
            redis,
            config,
            pool="gevent",
            concurrency=100,
            report_file=str(tmp / "r.jsonl"),
        )

    def run_all(self, name: str, calls: list[tuple[Any, ...]], timeout: float) -> list[Any]:
        results = [
            self.app.send_task(name, args=list(args), queue=self.process.queue) for args in calls
        ]
        return [r.get(timeout=timeout) for r in results]

    def history_ids(self, channel: str) -> list[str]:
        with self.redis.client() as r:
            entries = r.xrange(f"task-history:{channel}")
        return [json.loads(fields[b"event"])["event_id"] for _, fields in entries]

    def stop(self) -> dict[str, Any]:
        """Stop the worker (warm shutdown: it drains); its one process's final counters."""
        assert 0 == self.process.stop()
        (counters,) = self.process.reports()
        return counters


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_200_io_bound_tasks_publish_every_event_off_the_hub(
    redis: RedisServer, tmp_path: Path
) -> None:
    """200 tasks on 100 greenlets, each sleeping cooperatively and publishing 10 progress
    events: all 2,000 arrive, with each run's lifecycle events; the notifier thread is a real
    OS thread, not the hub's; health answers; the worker drains at exit."""
    with GeventWorker(redis, tmp_path, redis.url) as worker:
        jobs = [f"gv-{uuid.uuid4().hex[:8]}" for _ in range(200)]
        assert [10] * 200 == worker.run_all("gv.io", [(job, 10) for job in jobs], timeout=120)
        where = worker.run_all("gv.ticks", [()], timeout=30)[0]
        assert where["threading_patched"]
        assert where["notifier_thread_ident"] not in (None, where["hub_thread_ident"])
        base = f"http://127.0.0.1:{worker.health_port}"
        wait_until(lambda: 200 == health_report(base)[0], 10)  # at the next heartbeat, at most
        assert 1 == len(health_report(base)[1]["processes"])
        counters = worker.stop()
        stored = {job: worker.history_ids(job) for job in jobs}
    assert all(10 == len(set(ids)) for ids in stored.values()), stored
    # 2,000 progress events, and started + completed for each of the 201 runs (gv.ticks too).
    assert 2000 + 2 * 201 == counters["accepted"] == counters["published"], counters
    assert 0 == counters["pending"] == counters["dropped"]


def test_the_hub_stays_responsive_while_the_worker_publishes_5000_events_per_s(
    redis: RedisServer, tmp_path: Path
) -> None:
    """10 tasks publish 500 events/s each for 4 s while a greenlet ticks every 10 ms: every
    event arrives, and the ticks' lateness (reported beside the same worker's idle lateness)
    never comes near a network wait."""
    with GeventWorker(redis, tmp_path, redis.url) as worker:
        worker.run_all("gv.ticks", [(True,)], timeout=30)
        worker.run_all("gv.io", [("idle", 40)], timeout=60)  # 0.4 s or more of a quiet hub
        idle = worker.run_all("gv.ticks", [(True,)], timeout=30)[0]
        jobs = [f"burst-{i}" for i in range(10)]
        accepted = worker.run_all("gv.burst", [(job, 500.0, 4.0) for job in jobs], timeout=120)
        busy = worker.run_all("gv.ticks", [(True,)], timeout=30)[0]
        counters = worker.stop()
    assert [2000] * 10 == accepted
    assert all(2000 == len(set(worker.history_ids(job))) for job in jobs)
    assert 0 == counters["dropped"] and counters["accepted"] == counters["published"]
    assert busy["count"] > 100 and busy["max_ms"] / 1000 < HUB_NEVER_STALLS, busy
    report(
        "gevent_hub_lateness",
        idle_p99_ms=round(idle.get("p99_ms", 0.0), 2),
        busy_p50_ms=round(busy["p50_ms"], 2),
        busy_p99_ms=round(busy["p99_ms"], 2),
        busy_max_ms=round(busy["max_ms"], 2),
        ticks=busy["count"],
    )


def test_a_redis_reset_in_mid_stream_loses_nothing(redis: RedisServer, tmp_path: Path) -> None:
    """The notifier's connection goes through a TCP proxy that resets it while 5 tasks publish:
    the notifier thread reconnects and resends, and every event is stored."""
    with (
        FaultProxy("127.0.0.1", redis.port) as proxy,
        GeventWorker(redis, tmp_path, proxy.url) as worker,
    ):
        jobs = [f"reset-{i}" for i in range(5)]
        results = [
            worker.app.send_task("gv.burst", args=[job, 400.0, 3.0], queue=worker.process.queue)
            for job in jobs
        ]
        wait_until(lambda: any(worker.history_ids(job) for job in jobs), 30)
        proxy.reset_all()
        assert [1200] * 5 == [r.get(timeout=120) for r in results]
        counters = worker.stop()
    assert all(1200 == len(set(worker.history_ids(job))) for job in jobs)
    assert counters["reconnects"] >= 1, counters
    assert 0 == counters["dropped"] and counters["accepted"] == counters["published"]
    report("gevent_reset", reconnects=counters["reconnects"], events=6000)


def test_the_eventlet_pool_is_refused_pointing_to_gevent() -> None:
    """eventlet stops the worker at start-up, with a message that names gevent instead."""

    class Worker:
        pool_cls = "eventlet"

    with pytest.raises(SystemExit) as caught:
        _Handlers(NotifierConfig(), flush_on_task_end=True).on_worker_init(sender=Worker())
    assert "the eventlet pool is not supported" in str(caught.value)
    assert "-P gevent" in str(caught.value)
