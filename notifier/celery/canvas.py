"""The Celery side of workflows: which workflow a task belongs to, and how many members it has.

At ``before_task_publish``, in whichever process sends the message:

- a message that continues the canvas of the task running here (the next step of its chain, its
  chord's callback, a group inside its chain, its own retry) carries that task's workflow id on;
- otherwise a message that starts a canvas opens a workflow: a group's member (a chord's header
  included) opens the group's, keyed by the group id; the first task of a chain opens the
  chain's, keyed by its own id (the chain's ``root_id``). It declares its branch and how many
  members the branch has, counted from the signatures the message carries (the rest of the
  chain, the chord's callback);
- a message that is neither (a plain ``delay()``) is no workflow's.

The id goes in the message's ``notifier_workflow`` header, which Celery hands to the task as
``task.request.notifier_workflow``. A group's size is known only once all its messages are out:
the app's ``GroupResult``, which ``group.apply_async`` makes then, seals the workflow with the
number of branches. Until it is sealed a workflow cannot complete, so a member that finishes
before the last message is sent never makes it look done.

:func:`workflow_id` gives the id from what ``apply_async`` returned, for the page to subscribe to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from celery import Celery, current_task, signals
from celery.result import AsyncResult, GroupResult, ResultBase

from notifier import default
from notifier.workflows.steps import declaration

HEADER = "notifier_workflow"


def workflow_id(result: ResultBase) -> str:
    """The workflow id of a canvas from the result its ``apply_async()`` returned: the group id
    for a group or a chord, the first task's id for a chain."""
    while getattr(result, "parent", None) is not None:
        result = result.parent
    if not isinstance(result, AsyncResult | GroupResult):
        raise TypeError(f"not a Celery result: {type(result).__name__}")
    return str(result.id)


def members(signature: object) -> int:
    """How many tasks a signature (as a message carries it, a dict) runs: a chain's and a
    group's add up, a chord has its header's and its callback's."""
    if isinstance(signature, list | tuple):
        return sum(members(s) for s in signature)
    if not isinstance(signature, dict):
        return 1
    kind, kwargs = signature.get("subtask_type"), signature.get("kwargs") or {}
    if kind in ("chain", "group"):
        return members(kwargs.get("tasks") or [])
    if kind == "chord":
        return members(kwargs.get("header") or []) + members(kwargs.get("body"))
    return 1


class Canvases:
    """The receiver and the GroupResult hook for one app; knows the groups this process opened
    and has not sealed yet."""

    def __init__(self) -> None:
        self._open: set[str] = set()
        self._lock = threading.Lock()

    def connect(self, app: Celery) -> None:
        signals.before_task_publish.connect(
            self.on_publish, weak=False, dispatch_uid="notifier.workflows.publish"
        )
        if not getattr(app.GroupResult, "_notifier_seals", False):
            app.GroupResult = _sealing(app.GroupResult, self)

    @staticmethod
    def disconnect() -> None:
        signals.before_task_publish.disconnect(dispatch_uid="notifier.workflows.publish")

    def on_publish(
        self, sender: Any = None, body: Any = None, headers: Any = None, **_: Any
    ) -> None:
        if not isinstance(headers, dict) or not headers.get("id"):
            return
        task_id = str(headers["id"])
        carried = _carried(task_id)
        if carried is not None:
            headers[HEADER] = carried
            return
        embed = body[2] if isinstance(body, list | tuple) and len(body) == 3 else None
        embed = embed if isinstance(embed, dict) else {}
        size = 1 + members(embed.get("chain") or [])
        group = headers.get("group")
        if group:
            chord = embed.get("chord")
            with self._lock:
                self._open.add(str(group))
            headers[HEADER] = workflow = str(group)
            step = declaration(
                workflow, branch=task_id, size=size, callback=members(chord) if chord else None
            )
        elif embed.get("chain"):
            headers[HEADER] = workflow = task_id
            step = declaration(workflow, branch=task_id, size=size, seal=1)
        else:
            return
        default.get_notifier().integration.publish_step(step)

    def sealed(self, group_id: str, branches: int) -> None:
        """A group this process opened has all its messages out: ``branches`` of them."""
        with self._lock:
            if group_id not in self._open:
                return  # not a workflow's root group (a group inside a chain, say)
            self._open.discard(group_id)
        default.get_notifier().integration.publish_step(declaration(group_id, seal=branches))


def _sealing(base: type[GroupResult], canvases: Canvases) -> type[GroupResult]:
    """``base`` that seals a workflow when group.apply_async makes it (the one call that
    passes ``ready_barrier``), with the number of branches it sent."""

    class SealingGroupResult(base):  # type: ignore[misc]
        _notifier_seals = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if kwargs.get("ready_barrier") is not None and self.id:
                canvases.sealed(str(self.id), len(self.results))

    SealingGroupResult.__name__ = SealingGroupResult.__qualname__ = "GroupResult"
    return SealingGroupResult


def _carried(task_id: str) -> str | None:
    """The workflow of the task running here, when ``task_id`` continues its canvas."""
    request = getattr(current_task, "request", None)  # of this thread or greenlet
    workflow = getattr(request, HEADER, None)
    if not workflow:
        return None
    if task_id == getattr(request, "id", None):
        return str(workflow)  # its retry
    for part in ("chain", "chord", "callbacks"):
        if task_id in _ids(getattr(request, part, None)):  # stops at the first match
            return str(workflow)
    return None


def _ids(signature: object) -> Iterator[str]:
    """Every task id frozen into a signature (as a message carries it), nested ones too."""
    if isinstance(signature, list | tuple):
        for part in signature:
            yield from _ids(part)
    elif isinstance(signature, dict):
        options = signature.get("options")
        if isinstance(options, dict) and options.get("task_id"):
            yield str(options["task_id"])
        kwargs = signature.get("kwargs")
        if isinstance(kwargs, dict):
            for value in kwargs.values():
                yield from _ids(value)
