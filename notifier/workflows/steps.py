"""What goes to a workflow: steps, and members' events on their way to becoming steps.

A step says what happened to the workflow -- a member's event, a branch of members declared, the
number of branches sealed -- and carries the workflow events it may cause, encoded up to their
counts (``prefix``): the script in Redis appends the counts it computes and publishes those it
decides on (``script``). So the JSON is made here, by orjson, and the
script only writes numbers.

A declaration is queued as a step of its own by the process that applies the canvas. A member's
event is queued once, as a :class:`Member`: the notifier thread sends it and makes its step
then, so the caller pays one put, and the step shares the event's fate (coalescing included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from notifier.events import JSON_OPTIONS, new_event_id
from notifier.workflows.ids import PREFIX

# A member's event type -> what it does to the member: it runs, it succeeded, it failed.
CHANGES = {"started": "running", "completed": "completed", "failed": "failed", "revoked": "failed"}


@dataclass(frozen=True, slots=True)
class Step:
    """One update of a workflow's state. Empty text means "not this"."""

    workflow: str  # the workflow id (its channel id is ids.channel_id(workflow))
    member: str = ""  # the member whose event this is
    change: str = ""  # "running", "completed", "failed", or "" (progress, retrying, ...)
    progress: str = ""  # the member's progress now, as a JSON number
    branch: str = ""  # a branch of the workflow declared: the id of its first task
    size: int = 0  # how many members that branch has
    callback: str = ""  # how many members the chord callback has
    seal: str = ""  # how many branches the workflow has in all
    member_event: bytes = b""  # the "member" event, up to its counts
    completed_event: bytes = b""  # the terminal "completed" event, up to its counts
    failed_event: bytes = b""  # the terminal "failed" event, up to its counts
    derived: bool = False  # made from a member's event: counted as that event, not apart


def member_step(
    workflow: str,
    member: str,
    event_type: str,
    payload: bytes,
    progress: object = None,
    derived: bool = False,
) -> Step:
    """The step for a member's event, ``payload`` as its own channel has it."""
    change = CHANGES.get(event_type, "")
    event = prefix("member", workflow, {"member": member, "event": orjson.Fragment(payload)})
    completed = prefix("completed", workflow, {}) if change == "completed" else b""
    failed = b""
    if change == "failed":
        failed = prefix("failed", workflow, {"member": member, **_error(event_type, payload)})
    number = (
        None if isinstance(progress, bool) or not isinstance(progress, int | float) else progress
    )
    return Step(
        workflow,
        member=member,
        change=change,
        progress="" if number is None else orjson.dumps(number).decode(),
        member_event=event,
        completed_event=completed,
        failed_event=failed,
        derived=derived,
    )


def declaration(
    workflow: str,
    *,
    branch: str = "",
    size: int = 0,
    callback: int | None = None,
    seal: int | None = None,
) -> Step:
    """The step that tells the workflow about its members; it may complete the workflow (when
    its members all finished before it arrived)."""
    return Step(
        workflow,
        branch=branch,
        size=size,
        callback="" if callback is None else str(callback),
        seal="" if seal is None else str(seal),
        completed_event=prefix("completed", workflow, {}),
    )


def prefix(event_type: str, workflow: str, data: dict[str, Any]) -> bytes:
    """A workflow event encoded up to the counts that end its data: the script appends
    ``"total":...}}``."""
    envelope = {
        "event_id": new_event_id(),
        "type": event_type,
        "workflow_id": workflow,
        "timestamp": datetime.now(UTC),
        "data": data,
    }
    body = orjson.dumps(envelope, option=JSON_OPTIONS)[:-2]  # without the closing "}}"
    return body if body.endswith(b"{") else body + b","


def _error(event_type: str, payload: bytes) -> dict[str, Any]:
    """What ends a workflow's failed event: the member's error, as its failed event has it."""
    if event_type == "revoked":
        return {"error": "revoked", "error_type": None}
    data = orjson.loads(payload).get("data", {})
    return {"error": data.get("error") or "failed", "error_type": data.get("error_type")}


@dataclass(frozen=True, slots=True)
class Member:
    """A member's event as the queue holds it: its payload for its own channel, and what the
    notifier thread makes of it for its workflow when it sends it (:meth:`events`). One queue
    item for both: coalesced, evicted, dropped or sent together."""

    payload: bytes
    workflow: str
    event_type: str
    progress: object = None

    def events(self, task_id: str) -> list[tuple[str, bytes | Step]]:
        """The member's own event, then its workflow's step (a side effect of sending the
        event, as its history entry is: not counted on its own). Both ids were checked when
        the task joined (``Notifier.join_workflow``); a step that cannot be made anyway is left
        out, never the event."""
        try:
            step = member_step(
                self.workflow, task_id, self.event_type, self.payload, self.progress, True
            )
        except (TypeError, ValueError):  # orjson's errors; the notifier thread must go on
            return [(task_id, self.payload)]
        return [(task_id, self.payload), (PREFIX + self.workflow, step)]
