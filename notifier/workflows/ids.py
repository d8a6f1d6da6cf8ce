"""A workflow's channel id: ``workflow:<id>``. It names the workflow's channel and history stream
the way a task id names a task's, so history, replay, subscribe() and the gateway work for
workflows unchanged. The prefix keeps a chain's channel apart from its first task's, whose id
the chain shares. (A task id that itself starts with ``workflow:`` would share a workflow's
channel; Celery's ids never do.)"""

from __future__ import annotations

from notifier.events import check_task_id

PREFIX = "workflow:"


def channel_id(workflow_id: str) -> str:
    """The channel id of ``workflow_id`` (a canvas's root task id or group id); InvalidEvent for
    an id that cannot name a channel."""
    check_task_id(workflow_id)
    return check_task_id(PREFIX + workflow_id)


def workflow_of(channel: str) -> str | None:
    """The workflow id a channel id names, or None for a task's channel id."""
    return channel[len(PREFIX) :] if channel.startswith(PREFIX) else None
