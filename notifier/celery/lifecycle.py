"""Lifecycle events from Celery's own signals: every task run ends with one terminal event.

``notifier.celery.install(app)`` connects these receivers (``lifecycle=False`` leaves them out).
For every task the worker runs, on the channel of its Celery task id (or of the id that
``channel_key`` returns), without a notifier call in the task's code:

- ``started`` at ``task_prerun``, in the process that runs the task;
- ``retrying`` at ``task_retry``, with the reason and the countdown or eta: not terminal;
- ``completed`` at ``task_success``, with ``data.result`` when the result encodes as JSON
  exactly, else a bounded ``repr`` and ``result_repr: true``;
- ``failed`` at ``task_failure``, with ``error`` and ``error_type`` as ``publish_failed`` sends
  them and a bounded traceback tail. Celery sends this signal in the process that ran the task
  for an exception (a soft time limit included), and in the worker's main process for a child it
  lost (``WorkerLostError``: SIGKILL, the OOM killer) or killed at the hard time limit
  (``TimeLimitExceeded``);
- ``revoked`` at ``task_revoked``, with ``terminated``, ``signum`` and ``expired``, in the main
  process.

Exactly one terminal event per run: a run whose own code already published a terminal event
on the same channel (``publish_completed`` on its own id, say) gets none from here, and a process
never publishes two for one task id (the main process sees both ``TimeLimitExceeded`` and the
lost child it killed).

A task that belongs to a workflow (``notifier.workflows``) joins it for its run: each of these
events, and every event the task's own code publishes on its channel meanwhile, is also a step
of the workflow. The worker's main process joins it when the task is received, so that what it
publishes for a lost child counts too.

Every receiver is guarded: a lifecycle event that cannot be made is logged as
``lifecycle_event_failed`` and never disturbs the task or the worker.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from celery import signals

from notifier import default
from notifier.celery.canvas import HEADER
from notifier.coalesce import RECENT_MAX
from notifier.events import describe_error, truncate
from notifier.eventtypes import RESULT_REPR_MAX, TRACEBACK_TAIL
from notifier.exceptions import InvalidEvent
from notifier.logs import get_logger
from notifier.publisher import Notifier
from notifier.recent import Recent

# channel_key(task_name, task_id, args, kwargs): the id whose channel gets the task's lifecycle
# events, or None for no lifecycle events for this task.
ChannelKey = Callable[[str, str, Sequence[Any], Mapping[str, Any]], str | None]

RESULT_JSON_MAX = 16 * 1024  # a result encoded larger than this is sent as its repr

_SIGNALS = (
    "task_received",
    "task_prerun",
    "task_retry",
    "task_success",
    "task_failure",
    "task_revoked",
    "task_postrun",
)


class Lifecycle:
    """The receivers, and what they remember: when each run started in this process."""

    def __init__(self, channel_key: ChannelKey | None = None) -> None:
        self.channel_key = channel_key
        # celery task id -> monotonic start of its run here
        self._started: Recent[str, float] = Recent(RECENT_MAX)

    def connect(self) -> None:
        for name in _SIGNALS:
            receiver = getattr(self, f"on_{name}")
            # weak=False: nothing else keeps this object alive. dispatch_uid: installing again
            # replaces these receivers instead of doubling them.
            getattr(signals, name).connect(
                _guarded(receiver), weak=False, dispatch_uid=f"notifier.celery.lifecycle.{name}"
            )

    @staticmethod
    def disconnect() -> None:
        for name in _SIGNALS:
            getattr(signals, name).disconnect(dispatch_uid=f"notifier.celery.lifecycle.{name}")

    # Receivers ------------------------------------------------------------------------------

    def on_task_received(self, request: Any = None, **_: Any) -> None:
        """In the worker's main process: a workflow's member joins it here too."""
        headers = getattr(request, "request_dict", None) or {}
        key = self._key(getattr(request, "task", None), *_request_parts(request))
        workflow = headers.get(HEADER)
        if workflow:
            self._join(workflow, key, default.get_notifier())

    def on_task_prerun(
        self,
        sender: Any = None,
        task_id: str = "",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        # This runs before every task, on the task's thread: each lookup is done once (a
        # task's `request` is a thread-local stack's top, the default notifier a pid check).
        key = self._key(sender, task_id, args, kwargs)
        self._started.remember(task_id, time.monotonic())
        notifier = default.get_notifier()
        # The run's own terminal event, if its code publishes one, must be remembered: _ended
        # asks for it at the end of the run.
        notifier.integration.track_endings()
        if key is not None:
            request = getattr(sender, "request", None)
            self._join(getattr(request, HEADER, None), key, notifier)
            retries = getattr(request, "retries", 0) or 0
            notifier.publish(key, "started", {"task": _name(sender), "retries": retries})

    def on_task_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        key = self._key(sender, *_request_parts(request))
        if key is None:
            return
        cause = getattr(reason, "exc", None) or reason
        error, error_type = describe_error(cause)
        data: dict[str, Any] = {"task": _name(sender), "reason": error, "error_type": error_type}
        when = getattr(reason, "when", None)
        if isinstance(when, datetime.datetime):
            data["eta"] = when.isoformat()
        elif isinstance(when, int | float) and not isinstance(when, bool):
            data["countdown"] = when
        default.publish(key, "retrying", data)

    def on_task_success(self, sender: Any = None, result: Any = None, **_: Any) -> None:
        task_id, args, kwargs = _request_parts(getattr(sender, "request", None))
        key = self._key(sender, task_id, args, kwargs)
        if key is None:
            return
        notifier = default.get_notifier()
        if self._ended(key, task_id, notifier):
            return
        name = _name(sender)
        try:
            notifier.publish_completed(key, task=name, **_result_fields(result))
        except ValueError:  # InvalidEvent: over queue.max_event_bytes as JSON; send the repr
            notifier.publish_completed(key, task=name, **_repr_fields(result))

    def on_task_failure(
        self,
        sender: Any = None,
        task_id: str = "",
        exception: BaseException | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        key = self._key(sender, task_id, args, kwargs)
        if key is None or self._ended(key, task_id, default.get_notifier()):
            return
        tail = _traceback_tail(einfo)
        extra = {"traceback": tail} if tail else {}
        default.publish_failed(key, exception, task=_name(sender), **extra)

    def on_task_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: bool = False,
        signum: Any = None,
        expired: bool = False,
        **_: Any,
    ) -> None:
        task_id, args, kwargs = _request_parts(request)
        key = self._key(sender, task_id, args, kwargs)
        notifier = default.get_notifier()
        if key is None or self._ended(key, task_id, notifier):
            return
        headers = getattr(request, "request_dict", None) or {}
        self._join(headers.get(HEADER), key, notifier)
        data = {
            "task": _name(sender),
            "terminated": bool(terminated),
            "signum": None if signum is None else str(signum),
            "expired": bool(expired),
        }
        notifier.publish(key, "revoked", data)

    def on_task_postrun(
        self,
        sender: Any = None,
        task_id: str = "",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        key = self._key(sender, task_id, args, kwargs)
        if key is not None:
            default.get_notifier().integration.leave_workflow(key)

    # Helpers --------------------------------------------------------------------------------

    @staticmethod
    def _join(workflow: object, key: str | None, notifier: Notifier) -> None:
        """The task whose channel is ``key`` runs as a member of ``workflow`` (its header's
        value), when it has both."""
        if key is None or not workflow or not isinstance(workflow, str):
            return
        try:
            notifier.integration.join_workflow(key, workflow)
        except InvalidEvent as exc:  # a header no canvas of ours wrote: the task's events go on
            log = get_logger(notifier.config.logging.level)
            log.warning("workflow_id_invalid", task_id=key, error=str(exc))

    def _key(
        self,
        sender: Any,
        task_id: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
    ) -> str | None:
        if not task_id:
            return None
        if self.channel_key is None:
            return task_id
        return self.channel_key(_name(sender), task_id, args or (), kwargs or {})

    def _ended(self, key: str, task_id: str, notifier: Notifier) -> bool:
        """Whether this run already has its terminal event: published by the run's own code
        since it started here, or by this process for this task at any time (the main process,
        which sees no prerun)."""
        since = self._started.pop(task_id, -math.inf)
        return notifier.integration.ended_since(key, since)


def _guarded(receiver: Callable[..., None]) -> Callable[..., None]:
    """``receiver``, logging instead of raising: Celery would log a failed receiver as an error
    of the task; a lifecycle event must never be one."""

    def receive(*args: Any, **kwargs: Any) -> None:
        try:
            receiver(*args, **kwargs)
        except Exception as exc:
            error, _ = describe_error(exc)
            log = get_logger(default.get_notifier().config.logging.level)
            log.error("lifecycle_event_failed", receiver=receiver.__name__, error=error)

    receive.__name__ = receiver.__name__
    return receive


def _name(task: Any) -> str:
    return str(getattr(task, "name", None) or "")


def _request_parts(request: Any) -> tuple[str, Sequence[Any], Mapping[str, Any]]:
    """A Celery request's (task id, args, kwargs); blanks when it has none."""
    task_id = getattr(request, "id", None) or ""
    args = getattr(request, "args", None) or ()
    kwargs = getattr(request, "kwargs", None) or {}
    return str(task_id), args, kwargs


def _result_fields(result: Any) -> dict[str, Any]:
    """``{"result": result}`` when JSON carries it exactly, else its bounded repr."""
    try:
        encoded = orjson.dumps(result)
        exact = len(encoded) <= RESULT_JSON_MAX and orjson.loads(encoded) == result
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        exact = False
    return {"result": result} if exact else _repr_fields(result)


def _repr_fields(result: Any) -> dict[str, Any]:
    try:
        text = repr(result)
    except Exception as exc:  # a broken __repr__ must not take the event with it
        text = f"<unrepresentable {type(result).__name__}: repr() raised {type(exc).__name__}>"
    return {"result": truncate(text, RESULT_REPR_MAX), "result_repr": True}


def _traceback_tail(einfo: Any) -> str | None:
    text = getattr(einfo, "traceback", None)
    if not isinstance(text, str) or not text:
        return None
    if len(text) <= TRACEBACK_TAIL:
        return text
    return "..." + text[-(TRACEBACK_TAIL - 3) :]
