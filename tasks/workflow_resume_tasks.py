"""Workflow tasks: start a workflow, resume it after review, resume it from a checkpoint.

The failure path is the reason this application exists. When a task fails it first records the
failure in the database -- the critical operation, in its own try/except -- and then hands a
``failed`` notification to the notifier, which never blocks, never raises and never awaits Redis
on the task's event loop. A lost notification never changes the task's result.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

import notifier
from tasks.application import app, get_store
from tasks.runtime import run_async
from tasks.steps import StepContext, resolve
from tasks.store import Status, TaskNotFound, TaskRecord

log = structlog.get_logger("tasks")

Result = dict[str, Any]


class WorkflowError(RuntimeError):
    """A workflow cannot go on: wrong state, unknown task or checkpoint."""


class ReviewRejected(RuntimeError):
    """The reviewer turned the workflow down; the message is the reviewer's reason."""


@app.task(name="tasks.start_workflow")
def start_workflow(task_id: str) -> Result:
    """Run a pending workflow from its first step to its review gate or its end."""
    try:
        record = _load(task_id, {Status.PENDING})
        return run_async(run_steps(record, start=0))
    except Exception as exc:
        log.exception("start_workflow_failed", task_id=task_id)
        return mark_task_failed(task_id, exc)


@app.task(name="tasks.resume_after_review")
def resume_after_review(task_id: str, review: dict[str, Any]) -> Result:
    """Continue a workflow waiting at its review gate if approved; if not, fail with the reason."""
    try:
        record = _load(task_id, {Status.WAITING_REVIEW})
        if not review.get("approved"):
            raise ReviewRejected(str(review.get("reason") or "rejected without a reason"))
        return run_async(run_steps(record, start=record.review_after or 0))
    except Exception as exc:
        log.exception("resume_after_review_failed", task_id=task_id)
        return mark_task_failed(task_id, exc)


@app.task(name="tasks.resume_from_checkpoint")
def resume_from_checkpoint(task_id: str, checkpoint_id: str) -> Result:
    """Continue a workflow after the named checkpoint (a step it already finished)."""
    try:
        record = _load(task_id, {Status.RUNNING, Status.FAILED, Status.WAITING_REVIEW})
        index = get_store().checkpoint_index(task_id, checkpoint_id)
        if index is None:
            raise WorkflowError(f"unknown checkpoint {checkpoint_id!r} for task {task_id!r}")
        return run_async(run_steps(record, start=index + 1))
    except Exception as exc:
        log.exception("resume_from_checkpoint_failed", task_id=task_id)
        return mark_task_failed(task_id, exc)


def _load(task_id: str, allowed: set[Status]) -> TaskRecord:
    record = get_store().get_task(task_id)
    if record is None:
        raise WorkflowError(f"task {task_id!r} not found")
    if record.status not in allowed:
        expected = " or ".join(sorted(s.value for s in allowed))
        raise WorkflowError(f"task {task_id!r} is {record.status.value}, expected {expected}")
    return record


async def run_steps(record: TaskRecord, start: int) -> Result:
    """Run steps from ``start`` up to the review gate (if still ahead) or the end."""
    store, task_id, steps = get_store(), record.task_id, list(record.steps)
    gate = record.review_after
    stop = gate if gate is not None and start < gate else len(steps)
    for index in range(start, stop):
        name, argument, function = resolve(steps[index])
        store.start_step(task_id, index)
        await function(StepContext(task_id, index, name, argument))
        checkpoint = f"step-{index + 1}"
        store.record_checkpoint(task_id, checkpoint, index)
        notifier.publish_progress(
            task_id,
            round((index + 1) * 100 / len(steps), 1),
            message=f"step {index + 1}/{len(steps)}: {name}",
            step=name,
            checkpoint=checkpoint,
        )
    if stop < len(steps):
        store.set_status(task_id, Status.WAITING_REVIEW)
        notifier.publish(task_id, "waiting_review", {"after_step": stop})
        return {"success": True, "status": Status.WAITING_REVIEW.value}
    store.set_status(task_id, Status.COMPLETED)
    notifier.publish_completed(task_id, result={"steps": len(steps)})
    return {"success": True, "status": Status.COMPLETED.value}


def mark_task_failed(task_id: str, error: BaseException | str) -> Result:
    """Record the failure, then notify. The database update is the critical path and goes first;
    the notification is fire-and-forget and can neither raise nor delay the task."""
    text = error_text(error)
    try:
        try:
            get_store().mark_failed(task_id, text)
            log.info("task_marked_as_failed", task_id=task_id, error=text)
        except (TaskNotFound, SQLAlchemyError) as exc:
            log.error("failed_to_update_task_status", task_id=task_id, error=error_text(exc))
        if not notifier.publish_failed(task_id, error):
            log.warning("failed_to_send_failure_notification", task_id=task_id)
    except Exception:
        log.exception("failed_to_mark_task_as_failed", task_id=task_id)
    return {"success": False, "status": Status.FAILED.value, "error": text}


def error_text(error: BaseException | str) -> str:
    """The same ``"ExcType: message"`` text the notifier sends, so DB and event agree."""
    if isinstance(error, str):
        return error
    try:
        message = str(error)
    except Exception:
        message = f"<unprintable {type(error).__name__}>"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
