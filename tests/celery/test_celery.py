"""End to end with a real Celery worker: DB status and the events a subscriber receives."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from notifier.testing import RedisServer
from tasks.settings import ENV_DATABASE_URL
from tasks.store import Status

from support.celery import Harness, types
from support.faultproxy import FaultProxy
from support.helpers import postgres_schema

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def redis_for_celery() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def harness(
    request: pytest.FixtureRequest,
    redis_for_celery: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    """One prefork worker (2 children) per database, shared by the scenario tests."""
    tmp = tmp_path_factory.mktemp("celery")
    if request.param == "sqlite":
        with Harness(redis_for_celery, f"sqlite:///{tmp / 'tasks.db'}", tmp) as h:
            yield h
    else:
        with postgres_schema() as url, Harness(redis_for_celery, url, tmp) as h:
            yield h


def test_workflow_runs_to_completion(harness: Harness) -> None:
    """Each step publishes progress and records a checkpoint; the end publishes completed."""
    task_id = harness.new_task(["noop", "sleep:0.05", "cpu:0.02"])
    assert {"success": True, "status": "completed"} == harness.run("start_workflow", task_id)
    events = harness.events(task_id, until_type="completed")
    assert ["progress", "progress", "progress", "completed"] == types(events)
    assert [33.3, 66.7, 100.0] == [e["data"]["progress"] for e in events[:3]]
    assert ["step-1", "step-2", "step-3"] == [e["data"]["checkpoint"] for e in events[:3]]
    record = harness.store.get_task(task_id)
    assert record is not None
    assert (Status.COMPLETED, 2, "step-3", None) == (
        record.status,
        record.current_step,
        record.checkpoint,
        record.error,
    )


def test_review_approved_continues_to_completion(harness: Harness) -> None:
    """The gate publishes waiting_review; approval runs the remaining steps."""
    task_id = harness.new_task(["noop", "noop", "noop"], review_after=2)
    assert {"success": True, "status": "waiting_review"} == harness.run("start_workflow", task_id)
    assert ["progress", "progress", "waiting_review"] == types(
        harness.events(task_id, until_type="waiting_review")
    )
    record = harness.store.get_task(task_id)
    assert record is not None and Status.WAITING_REVIEW == record.status
    result = harness.run("resume_after_review", task_id, {"approved": True})
    assert {"success": True, "status": "completed"} == result
    events = harness.events(task_id, until_type="completed")
    assert ["progress", "progress", "waiting_review", "progress", "completed"] == types(events)
    record = harness.store.get_task(task_id)
    assert record is not None and Status.COMPLETED == record.status


def test_review_rejected_fails_with_the_reviewers_reason(harness: Harness) -> None:
    """A rejection marks the task failed with the reason, and the failed event says the same."""
    task_id = harness.new_task(["noop", "noop"], review_after=1)
    harness.run("start_workflow", task_id)
    result = harness.run("resume_after_review", task_id, {"approved": False, "reason": "no SLA"})
    assert {"success": False, "status": "failed", "error": "ReviewRejected: no SLA"} == result
    events = harness.events(task_id, until_type="failed")
    assert ["progress", "waiting_review", "failed"] == types(events)
    assert "ReviewRejected: no SLA" == events[-1]["data"]["error"]
    record = harness.store.get_task(task_id)
    assert record is not None
    assert (Status.FAILED, "ReviewRejected: no SLA") == (record.status, record.error)


def test_resume_from_checkpoint_runs_the_remaining_steps(harness: Harness) -> None:
    """After a crash past step 1, resuming from its checkpoint runs steps 2 and 3 only."""
    task_id = harness.new_task(["noop", "noop", "noop"])
    harness.store.start_step(task_id, 0)
    harness.store.record_checkpoint(task_id, "step-1", 0)
    harness.store.start_step(task_id, 1)
    harness.store.mark_failed(task_id, "worker lost")
    result = harness.run("resume_from_checkpoint", task_id, "step-1")
    assert {"success": True, "status": "completed"} == result
    events = harness.events(task_id, until_type="completed")
    assert [("progress", "step-2"), ("progress", "step-3")] == [
        (e["type"], e["data"]["checkpoint"]) for e in events[:-1]
    ]
    record = harness.store.get_task(task_id)
    assert record is not None
    assert (Status.COMPLETED, None) == (record.status, record.error)


def test_resume_from_unknown_checkpoint_fails_naming_it(harness: Harness) -> None:
    """An unknown checkpoint fails the task with an error that names the checkpoint."""
    task_id = harness.new_task(["noop", "noop"])
    harness.store.mark_failed(task_id, "crashed")
    result = harness.run("resume_from_checkpoint", task_id, "step-9")
    expected = f"WorkflowError: unknown checkpoint 'step-9' for task '{task_id}'"
    assert {"success": False, "status": "failed", "error": expected} == result
    (event,) = harness.events(task_id, until_type="failed")
    assert expected == event["data"]["error"]
    record = harness.store.get_task(task_id)
    assert record is not None and expected == record.error


def test_unknown_step_fails_the_task_clearly(harness: Harness) -> None:
    """A step name nobody registered fails the task with the name and the known steps."""
    task_id = harness.new_task(["noop", "teleport"])
    result = harness.run("start_workflow", task_id)
    assert "failed" == result["status"]
    assert "unknown step 'teleport' (known steps: cpu, crash, fail, noop, sleep)" in result["error"]
    assert ["progress", "failed"] == types(harness.events(task_id, until_type="failed"))


def test_missing_task_row_still_notifies_and_logs_the_db_failure(harness: Harness) -> None:
    """No row to mark: failed_to_update_task_status is logged and the event still goes out."""
    task_id = f"wf-missing-{uuid.uuid4().hex[:6]}"
    result = harness.run("resume_after_review", task_id, {"approved": True})
    assert {"success": False, "status": "failed"} == {k: result[k] for k in ("success", "status")}
    assert ["failed"] == types(harness.events(task_id, until_type="failed"))
    assert harness.worker.wait_for_line('"failed_to_update_task_status"', 10)
    logged = harness.worker.log_events("failed_to_update_task_status")
    assert any(e["task_id"] == task_id for e in logged)


def test_a_task_id_the_notifier_refuses_still_ends_the_task_as_failed(harness: Harness) -> None:
    """The notifier refusing the id (a space in it) inside the failure path: publish_failed
    returns False instead of raising, the worker logs notification_invalid with the reason and
    failed_to_send_failure_notification, and the task still returns its own failure."""
    task_id = f"wf bad-{uuid.uuid4().hex[:6]}"
    result = harness.run("resume_after_review", task_id, {"approved": True})
    assert {"success": False, "status": "failed"} == {k: result[k] for k in ("success", "status")}
    assert f"WorkflowError: task '{task_id}' not found" == result["error"]
    assert harness.worker.wait_for_line('"failed_to_send_failure_notification"', 10)
    (logged,) = [
        e for e in harness.worker.log_events("failed_to_send_failure_notification")
        if e["task_id"] == task_id
    ]  # fmt: skip
    assert "warning" == logged["level"]
    invalid = harness.worker.log_events("notification_invalid")
    assert any("task_id must not contain whitespace" in e["reason"] for e in invalid), invalid
    assert [] == harness.worker.log_events("failed_to_mark_task_as_failed")


@pytest.mark.parametrize("flush_on_task_end", [True, False])
def test_child_recycled_after_every_task_loses_no_notification(
    redis_for_celery: RedisServer, tmp_path: Path, flush_on_task_end: bool
) -> None:
    """worker_max_tasks_per_child=1: every event of 20 workflows arrives, by either exit path."""
    table = f"flush_on_task_end = {str(flush_on_task_end).lower()}"
    with Harness(
        redis_for_celery,
        f"sqlite:///{tmp_path / 'tasks.db'}",
        tmp_path,
        max_tasks_per_child=1,
        celery_table=table,
    ) as h:
        task_ids = [h.new_task(["noop", "noop"]) for _ in range(20)]
        assert [{"success": True, "status": "completed"}] * 20 == h.run_all(
            "start_workflow", [(t,) for t in task_ids], timeout=60
        )
        for task_id in task_ids:
            assert ["progress", "progress", "completed"] == types(
                h.events(task_id, until_type="completed")
            )
        closed = h.worker.reports()
    # Each child that exited drained and said so; none had anything left over.
    assert closed and all(0 == e["pending"] and 0 == e["dropped"] for e in closed)


def test_notifier_redis_unreachable_tasks_still_fail_promptly(
    redis_for_celery: RedisServer,
    tmp_path: Path,
    proxy_factory: Callable[[RedisServer], FaultProxy],
) -> None:
    """Notifier's Redis blackholed, broker fine: failures reach the DB at once; events later.
    A task that waited on the notifier's Redis would take its 5 s publish_timeout."""
    proxy = proxy_factory(redis_for_celery)
    proxy.blackhole()
    with Harness(
        redis_for_celery,
        f"sqlite:///{tmp_path / 'tasks.db'}",
        tmp_path,
        notifier_url=proxy.url,
        publish_timeout=5.0,
    ) as h:
        # One task first, unmeasured: a new child's first task also opens the store.
        assert "completed" == h.run("start_workflow", h.new_task(["noop"]))["status"]
        task_ids = [h.new_task(["noop", "fail:disk full"]) for _ in range(5)]
        durations = []
        for task_id in task_ids:
            started = time.monotonic()
            result = h.run("start_workflow", task_id)
            durations.append(time.monotonic() - started)
            assert {"success": False, "status": "failed", "error": "StepFailed: disk full"} == (
                result
            )
            record = h.store.get_task(task_id)
            assert record is not None and Status.FAILED == record.status
        assert max(durations) < 2.5, durations  # a whole task round trip, under publish_timeout
        assert [] == h.worker.log_events("failed_to_send_failure_notification")
        proxy.forward()
        for task_id in task_ids:
            assert ["progress", "failed"] == types(h.events(task_id, until_type="failed"))


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_other_pools_deliver_and_drain(
    redis_for_celery: RedisServer, tmp_path: Path, pool: str
) -> None:
    """The threads and solo pools publish from the worker process and drain at shutdown."""
    with Harness(redis_for_celery, f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path, pool=pool) as h:
        ok = h.new_task(["noop", "sleep:0.01"])
        bad = h.new_task(["fail:nope"])
        assert "completed" == h.run("start_workflow", ok)["status"]
        assert "failed" == h.run("start_workflow", bad)["status"]
        assert ["progress", "progress", "completed"] == types(h.events(ok, until_type="completed"))
        assert ["failed"] == types(h.events(bad, until_type="failed"))
    closed = h.worker.reports()
    assert 1 == len(closed) and 0 == closed[0]["pending"]


def test_demo_runs_green_on_embedded_defaults() -> None:
    """`make demo`'s program, with no Redis or database configured, ends 'demo OK' with exit 0."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFIER_REDIS_URL", "NOTIFIER_CONFIG", ENV_DATABASE_URL)
    }
    done = subprocess.run(
        [sys.executable, "-m", "tasks.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "demo OK" in done.stdout
    assert 11 == done.stdout.count(" yes")
    assert "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)" in done.stdout
