"""Lifecycle events from Celery itself, on a real prefork worker running a user's own app whose
tasks never call the notifier: every run ends with exactly one terminal event."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from notifier import NotifierConfig, load_config, schema
from notifier.consumer import subscribe
from notifier.eventtypes import TERMINAL_TYPES
from notifier.testing import RedisServer, wait_until

from support.celery import AppWorker
from support.faults import report

pytestmark = pytest.mark.timeout(180)


class Worker(AppWorker):
    """A prefork worker running tests/apps/lifecycle_app.py, a client, and what each test sent."""

    def __init__(self, redis: RedisServer, tmp: Path, mode: str, **options: Any) -> None:
        self.config_path = tmp / f"config-{mode}.toml"
        self.config_path.write_text(
            f'[redis]\nurl = "{redis.url}"\nconnect_timeout = 1.0\npublish_timeout = 1.0\n'
            "[reconnect]\ninitial_backoff = 0.01\nmax_backoff = 0.2\n"
            "[history]\nenabled = true\n"
        )
        env = {"LIFECYCLE_MODE": mode, "NOTIFIER_REDIS_URL": redis.url}
        super().__init__("apps.lifecycle_app", redis, self.config_path, env, **options)
        self.config: NotifierConfig = load_config(self.config_path)
        self.sent: list[str] = []

    def send(self, name: str, *args: Any, **options: Any) -> str:
        task_id = str(uuid.uuid4())
        self.app.send_task(
            name, args=list(args), task_id=task_id, queue=self.process.queue, **options
        )
        self.sent.append(task_id)
        return task_id

    def until_end(self, channel: str, timeout: float = 30) -> list[dict[str, Any]]:
        """subscribe() to the channel until it returns, at its terminal event."""

        async def collect() -> list[dict[str, Any]]:
            async with asyncio.timeout(timeout):
                return [event async for event in subscribe(channel, config=self.config)]

        events = asyncio.run(collect())
        assert events and events[-1]["type"] in TERMINAL_TYPES, events
        return events

    def mark(self, task_id: str, what: str) -> float | None:
        with self.redis.client() as r:
            value = r.get(f"lc-mark:{task_id}:{what}")
        return None if value is None else float(value)

    def history(self, channel: str) -> list[str]:
        """The types of the events in the channel's history stream, in order."""
        return [_type(payload) for payload in self.payloads(channel)]

    def payloads(self, channel: str) -> list[bytes]:
        """The events in the channel's history stream, in order, as published."""
        with self.redis.client() as r:
            entries = r.xrange(self.config.history.key_prefix + channel)
        return [fields[b"event"] for _, fields in entries]


def _type(payload: bytes) -> str:
    kind: str = json.loads(payload)["type"]
    return kind


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def seconds_between(iso: str, unix: float) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - unix


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def worker(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One prefork worker with two children, shared by the scenarios below; the last test
    stops it and checks every run the others started."""
    with Worker(redis, tmp_path_factory.mktemp("lifecycle"), "default", concurrency=2) as w:
        yield w


def test_success_publishes_started_then_completed_with_the_result(worker: Worker) -> None:
    """A task that returns: started, then completed carrying the result as sent."""
    task_id = worker.send("lc.ok", 7)
    events = worker.until_end(task_id)
    assert ["started", "completed"] == types(events)
    assert {"task": "lc.ok", "retries": 0} == events[0]["data"]
    assert {"x": 7, "items": [1, 2.5, "é", None, True]} == events[-1]["data"]["result"]
    assert "result_repr" not in events[-1]["data"]


def test_a_result_json_would_change_is_sent_as_its_repr(worker: Worker) -> None:
    """A tuple would arrive as a list: the event carries repr() and says so."""
    events = worker.until_end(worker.send("lc.pair"))
    assert {"task": "lc.pair", "result": "(1, 2)", "result_repr": True} == events[-1]["data"]


def test_an_uncaught_exception_publishes_failed(worker: Worker) -> None:
    """The task raised without calling the notifier: failed, with the error as publish_failed
    sends it (non-ASCII kept) and the end of the traceback."""
    events = worker.until_end(worker.send("lc.boom"))
    assert ["started", "failed"] == types(events)
    data = events[-1]["data"]
    assert "ValueError: échec du paiement ✗" == data["error"]
    assert "ValueError" == data["error_type"]
    assert "raise ValueError" in data["traceback"] and len(data["traceback"]) <= 2000


def test_a_child_killed_mid_task_still_ends_with_failed(worker: Worker) -> None:
    """SIGKILL inside the task: no except block runs, and the worker's main process publishes
    failed with WorkerLostError."""
    task_id = worker.send("lc.die")
    events = worker.until_end(task_id)
    assert ["started", "failed"] == types(events)
    assert "WorkerLostError" == events[-1]["data"]["error_type"]
    assert "signal 9" in events[-1]["data"]["error"]
    dying = worker.mark(task_id, "dying")
    assert dying is not None
    report(
        "lifecycle_sigkill",
        failed_after_kill_s=round(seconds_between(events[-1]["timestamp"], dying), 3),
    )


def test_the_hard_time_limit_ends_with_failed_naming_it(worker: Worker) -> None:
    """time_limit=1 kills the child: the main process publishes failed, TimeLimitExceeded."""
    task_id = worker.send("lc.hang")
    events = worker.until_end(task_id)
    assert ["started", "failed"] == types(events)
    assert "TimeLimitExceeded" == events[-1]["data"]["error_type"]
    running = worker.mark(task_id, "running")
    assert running is not None
    report(
        "lifecycle_time_limit",
        failed_after_start_s=round(seconds_between(events[-1]["timestamp"], running), 3),
    )


def test_the_soft_time_limit_raised_in_the_task_ends_with_failed(worker: Worker) -> None:
    """soft_time_limit raises inside the task; uncaught, it is the run's failure."""
    events = worker.until_end(worker.send("lc.soft"))
    assert ["started", "failed"] == types(events)
    assert "SoftTimeLimitExceeded" == events[-1]["data"]["error_type"]


def test_revoke_with_terminate_ends_with_revoked(worker: Worker) -> None:
    """revoke(terminate=True) on a running task: revoked, terminated, with the signal."""
    task_id = worker.send("lc.wait")
    wait_until(lambda: worker.mark(task_id, "running"), 30)
    worker.app.control.revoke(task_id, terminate=True)
    events = worker.until_end(task_id)
    assert ["started", "revoked"] == types(events)
    data = events[-1]["data"]
    assert (True, False) == (data["terminated"], data["expired"])
    assert data["signum"] in ("15", "SIGTERM")


def test_retry_then_success_ends_once_after_the_last_run(worker: Worker) -> None:
    """A retry is not the end: started, retrying (reason, countdown), started, completed."""
    events = worker.until_end(worker.send("lc.flaky"))
    assert ["started", "retrying", "started", "completed"] == types(events)
    retrying = events[1]["data"]
    assert "ConnectionError: the bank did not answer" == retrying["reason"]
    assert 0.2 == retrying["countdown"]
    assert 1 == events[2]["data"]["retries"]
    assert "paid" == events[-1]["data"]["result"]


def test_progress_in_a_tight_loop_is_coalesced_and_never_overtakes_the_end(
    worker: Worker,
) -> None:
    """20,000 progress calls in one task, with the default progress_interval of 0.1 s: at most
    one per interval reaches the channel, the last is 100 %, and completed comes after it."""
    events = worker.until_end(worker.send("lc.crunch", 20_000))
    kinds = types(events)
    progress = [e["data"]["progress"] for e in events if e["type"] == "progress"]
    duration = events[-1]["data"]["result"]
    assert ["started", *["progress"] * len(progress), "completed"] == kinds
    assert 1 <= len(progress) <= duration / 0.1 + 2
    assert 100.0 == progress[-1]
    report(
        "lifecycle_coalescing", calls=20_000, loop_s=round(duration, 3), progress_sent=len(progress)
    )


def test_every_run_above_ended_with_exactly_one_terminal_event(worker: Worker) -> None:
    """Runs last in this module: once the worker has stopped (its processes drained), each
    task's whole history holds exactly one terminal event, and it is the last; and every
    event of every run is valid by the published JSON Schema (notifier/schema)."""
    sent = list(worker.sent)
    assert len(sent) == 9
    worker.process.stop()
    validator = Draft202012Validator(json.loads(schema.text("task-event")))
    seen: set[str] = set()
    for task_id in sent:
        history = worker.history(task_id)
        terminals = [t for t in history if t in TERMINAL_TYPES]
        assert 1 == len(terminals) and history[-1] == terminals[0], (task_id, history)
        for payload in worker.payloads(task_id):
            event = json.loads(payload)
            assert [] == [e.message for e in validator.iter_errors(event)], event
            seen.add(event["type"])
    # every type the lifecycle and the helpers make, from the runs above
    assert {"started", "progress", "retrying", "completed", "failed", "revoked"} <= seen


def test_a_recycled_child_per_task_ends_every_run(redis: RedisServer, tmp_path: Path) -> None:
    """worker_max_tasks_per_child=1 across 30 tasks: every run starts and completes, once."""
    with Worker(redis, tmp_path, "default", concurrency=2, max_tasks_per_child=1) as w:
        task_ids = [w.send("lc.ok", i) for i in range(30)]
        for i, task_id in enumerate(task_ids):
            events = w.until_end(task_id)
            assert ["started", "completed"] == types(events)
            assert i == events[-1]["data"]["result"]["x"]
    for task_id in task_ids:
        assert ["started", "completed"] == w.history(task_id)


def test_flush_on_task_end_keeps_the_last_run_when_the_child_dies_right_after(
    redis: RedisServer, tmp_path: Path
) -> None:
    """flush_on_task_end=True: each task's events are in Redis before its result goes to the
    worker, so a child killed at the very start of the next task (a millisecond later) still
    leaves the previous run's completed. (By default that completed may still be queued in the
    child, within queue.linger, and die with it: docs/celery.md.)"""
    with Worker(redis, tmp_path, "strict", concurrency=1) as w:
        before = w.send("lc.ok", 7)
        killed = w.send("lc.die_now")  # the same child takes it right after
        assert "WorkerLostError" == w.until_end(killed)[-1]["data"]["error_type"]
        assert ["started", "completed"] == w.history(before)


def test_a_runs_own_terminal_event_is_its_only_one_even_first_in_its_child(
    redis: RedisServer, tmp_path: Path
) -> None:
    """A run that publishes its own failed and returns adds no completed, also when it is the
    first run of a fresh child (worker_max_tasks_per_child=1: every run is)."""
    with Worker(redis, tmp_path, "default", concurrency=1, max_tasks_per_child=1) as w:
        task_ids = [w.send("lc.own_end") for _ in range(3)]
        for task_id in task_ids:
            assert ["started", "failed"] == types(w.until_end(task_id))
    for task_id in task_ids:
        assert ["started", "failed"] == w.history(task_id)


def test_channel_key_puts_lifecycle_events_on_the_applications_id(
    redis: RedisServer, tmp_path: Path
) -> None:
    """channel_key maps lc.job's events onto the job id it is given; other tasks keep theirs."""
    with Worker(redis, tmp_path, "keyed", concurrency=1) as w:
        job_task = w.send("lc.job", "job-42")
        events = w.until_end("job-42")
        assert ["started", "completed"] == types(events)
        assert "done job-42" == events[-1]["data"]["result"]
        plain = w.send("lc.ok", 1)
        assert ["started", "completed"] == types(w.until_end(plain))
    assert [] == w.history(job_task)


def test_lifecycle_false_publishes_nothing_of_its_own(redis: RedisServer, tmp_path: Path) -> None:
    """install(app, lifecycle=False): the tasks' runs leave no event at all."""
    with Worker(redis, tmp_path, "off", concurrency=1) as w:
        task_id = w.send("lc.ok", 1)
        assert {"x": 1, "items": [1, 2.5, "é", None, True]} == w.app.AsyncResult(task_id).get(
            timeout=30
        )
    assert [] == w.history(task_id)
