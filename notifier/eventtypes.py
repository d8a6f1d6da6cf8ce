"""The event types the library itself publishes, and what each one's ``data`` carries.

One definition for three readers: the publisher and the lifecycle take their limits and the
terminal types from here, and ``notifier.schema`` turns the table into the JSON Schema that a
backend in another language checks events against. Plain values; nothing here does I/O.

A ``data`` object may carry more than its type names here (the helpers' ``**extra``), and an
application may publish types of its own, whose ``data`` is any object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ERROR_MAX_CHARS = 4096  # an error text is cut to this, with a marker saying so
RESULT_REPR_MAX = 1000  # characters of repr() for a result that is not exact JSON
TRACEBACK_TAIL = 2000  # characters of a failure's traceback, from its end

STRING: Mapping[str, Any] = {"type": "string"}
ANY: Mapping[str, Any] = {}


@dataclass(frozen=True)
class Field:
    """One key of an event type's ``data``: its JSON Schema, and whether every event has it."""

    schema: Mapping[str, Any]
    description: str
    required: bool = True


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    fields: Mapping[str, Field] = field(default_factory=dict)
    terminal: bool = False  # the task's run ended with it: nothing of that run comes after


TASK = Field(STRING, "the Celery task's name (lifecycle events)", required=False)
LIFECYCLE_TASK = Field(STRING, "the Celery task's name")

TYPES: tuple[EventType, ...] = (
    EventType(
        "started",
        "a task run began (lifecycle, at task_prerun)",
        {
            "task": LIFECYCLE_TASK,
            "retries": Field({"type": "integer", "minimum": 0}, "the runs before this one"),
        },
    ),
    EventType(
        "progress",
        "publish_progress(): how far the run is",
        {
            "progress": Field({"type": "number"}, "a finite number, by convention a percent"),
            "message": Field({"type": ["string", "null"]}, "what the run is doing"),
        },
    ),
    EventType(
        "retrying",
        "the run will be tried again (lifecycle, at task_retry): not an end",
        {
            "task": LIFECYCLE_TASK,
            "reason": Field(STRING, "why, as publish_failed words an error"),
            "error_type": Field({"type": ["string", "null"]}, "the exception's class name"),
            "eta": Field(STRING, "when, as ISO 8601", required=False),
            "countdown": Field({"type": "number"}, "in how many seconds", required=False),
        },
    ),
    EventType(
        "completed",
        "the run succeeded: publish_completed(), or the lifecycle at task_success",
        {
            "result": Field(ANY, "the result as JSON, or its bounded repr()"),
            "result_repr": Field(
                {"const": True},
                f"result is repr(result), cut to {RESULT_REPR_MAX} characters",
                required=False,
            ),
            "task": TASK,
        },
        terminal=True,
    ),
    EventType(
        "failed",
        "the run failed: publish_failed(), or the lifecycle at task_failure (a lost child "
        "and the hard time limit included)",
        {
            "error": Field(
                {"type": "string", "minLength": 1, "maxLength": ERROR_MAX_CHARS},
                '"ExcType: message", never empty',
            ),
            "error_type": Field(STRING, "the exception's class name", required=False),
            "traceback": Field(
                {"type": "string", "maxLength": TRACEBACK_TAIL},
                "the traceback's last characters (lifecycle)",
                required=False,
            ),
            "task": TASK,
        },
        terminal=True,
    ),
    EventType(
        "revoked",
        "the run was revoked (lifecycle, at task_revoked)",
        {
            "task": LIFECYCLE_TASK,
            "terminated": Field({"type": "boolean"}, "its process was signalled"),
            "signum": Field({"type": ["string", "null"]}, "the signal, if one was sent"),
            "expired": Field({"type": "boolean"}, "it expired before it ran"),
        },
        terminal=True,
    ),
)

TERMINAL_TYPES = frozenset(t.name for t in TYPES if t.terminal)

# Workflow events (notifier.workflows): every one ends its data with the workflow's counts.
COUNT = {"type": "integer", "minimum": 0}
WORKFLOW_COUNTS: Mapping[str, Field] = {
    "total": Field(COUNT, "members known: declared by the canvas, or seen, if more"),
    "completed": Field(COUNT, "members that succeeded"),
    "failed": Field(COUNT, "members that failed, were revoked or were lost"),
    "running": Field(COUNT, "members started and not ended"),
    "progress": Field(
        {"type": "number"},
        "the mean of the members' last progress; a completed member counts 100, one without "
        "progress 0",
    ),
}
MEMBER = Field(STRING, "the member: the channel id of its task")

WORKFLOW_TYPES: tuple[EventType, ...] = (
    EventType(
        "member",
        "one of the members' events, and the counts after it",
        {
            "member": MEMBER,
            "event": Field({"type": "object"}, "the member's event as its own channel has it"),
            **WORKFLOW_COUNTS,
        },
    ),
    EventType(
        "completed",
        "every member succeeded, a chord's callback included",
        WORKFLOW_COUNTS,
        terminal=True,
    ),
    EventType(
        "failed",
        "a member failed, was revoked or was lost (SIGKILL, a time limit): the workflow cannot "
        "succeed. Sent at the first such member; the others may still be running",
        {
            "member": MEMBER,
            "error": Field(
                {"type": "string", "minLength": 1, "maxLength": ERROR_MAX_CHARS},
                'the member\'s error, as its failed event has it; "revoked" for a revoked one',
            ),
            "error_type": Field({"type": ["string", "null"]}, "the exception's class name"),
            **WORKFLOW_COUNTS,
        },
        terminal=True,
    ),
)
