"""The events' format as JSON Schema (draft 2020-12), for a backend in any language to check
what it reads.

Built from the definitions the publisher itself checks and makes events with: the limits and
patterns of ``notifier.events`` and the type tables of ``notifier.eventtypes``. The files
beside this module (``task-event.json``, ``workflow-event.json``) are what :func:`text` writes;
a test keeps them equal, and ``notifier schema NAME`` prints one.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from notifier.events import (
    EVENT_TYPE_CHARS,
    EVENT_TYPE_MAX,
    ID_PREFIX_BYTES,
    TASK_ID_FORBIDDEN,
    TASK_ID_MAX,
)
from notifier.eventtypes import TYPES, WORKFLOW_TYPES, EventType

HERE = Path(__file__).resolve().parent
DRAFT = "https://json-schema.org/draft/2020-12/schema"
# orjson with OPT_UTC_Z: microseconds only when there are some
TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z"


def _whole(body: str) -> str:
    r"""A pattern that ``body`` must match all of: ``(?![\s\S])`` is the end of the text in
    every dialect, where ``$`` also matches before a final newline in Python's and others."""
    return f"^{body}(?![\\s\\S])"


def _ecma(character_class: str) -> str:
    r"""A Python regular expression class body as JSON Schema's (ECMA-262) writes it: ``\xNN``
    becomes ``\u00NN``, and ``\s`` the characters Python's ``\s`` matches, since ECMA's differs
    (it has U+FEFF too)."""
    spaces = "".join(_ranges([c for c in range(sys.maxunicode + 1) if chr(c).isspace()]))
    return re.sub(r"\\x([0-9a-fA-F]{2})", r"\\u00\1", character_class.replace("\\s", spaces))


def _ranges(codes: list[int]) -> list[str]:
    r"""Code points as ``\uXXXX`` and ``\uXXXX-\uYYYY`` runs."""
    runs: list[list[int]] = []
    for code in codes:
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return [f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in runs]


def task_event() -> dict[str, Any]:
    """The schema of one event on a task's channel, as ``Notifier.publish`` and its helpers
    write it."""
    return {
        "$schema": DRAFT,
        "$id": "urn:notifier:schema:task-event",
        "title": "A notifier task event",
        "description": (
            "One UTF-8 JSON object per message on a task's channel (and per entry of its "
            "history stream). Types other than those below are an application's own: their "
            "data is any object."
        ),
        "type": "object",
        "required": ["event_id", "type", "task_id", "timestamp", "data"],
        "additionalProperties": False,
        "properties": {
            "event_id": EVENT_ID,
            "type": {
                "type": "string",
                "maxLength": EVENT_TYPE_MAX,
                "pattern": _whole(f"[{EVENT_TYPE_CHARS}]+"),
            },
            "task_id": _id("the channel's task (or the id lifecycle events are keyed by)"),
            "timestamp": STAMP,
            "data": {"type": "object"},
        },
        "allOf": [_typed(t) for t in TYPES],
    }


def workflow_event() -> dict[str, Any]:
    """The schema of one event on a workflow's channel, as the workflow script writes it."""
    return {
        "$schema": DRAFT,
        "$id": "urn:notifier:schema:workflow-event",
        "title": "A notifier workflow event",
        "description": (
            "One UTF-8 JSON object per message on a workflow's channel (workflow:<id>) and per "
            "entry of its history stream: a member's event with the counts after it, then "
            "exactly one terminal event."
        ),
        "type": "object",
        "required": ["event_id", "type", "workflow_id", "timestamp", "data"],
        "additionalProperties": False,
        "properties": {
            "event_id": EVENT_ID,
            "type": {"enum": [t.name for t in WORKFLOW_TYPES]},
            "workflow_id": _id("the canvas: its group id, or its chain's first task id"),
            "timestamp": STAMP,
            "data": {"type": "object"},
        },
        "allOf": [_typed(t, closed=True) for t in WORKFLOW_TYPES],
    }


EVENT_ID = {
    "type": "string",
    "pattern": _whole(f"[0-9a-f]{{{2 * ID_PREFIX_BYTES}}}-[0-9a-f]+"),
    "description": "unique: a random per-process prefix and a counter, in hex",
}
STAMP = {
    "type": "string",
    "format": "date-time",
    "pattern": _whole(TIMESTAMP),
    "description": "when the publishing call was made, in UTC",
}


def _id(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": TASK_ID_MAX,
        "pattern": _whole(f"[^{_ecma(TASK_ID_FORBIDDEN)}]+"),
        "description": description,
    }


def _typed(event_type: EventType, closed: bool = False) -> dict[str, Any]:
    """``data``'s shape when ``type`` is ``event_type``; ``closed``: nothing else in it."""
    data: dict[str, Any] = {
        "type": "object",
        "properties": {
            name: {**f.schema, "description": f.description}
            for name, f in event_type.fields.items()
        },
    }
    if closed:
        data["additionalProperties"] = False
    required = [name for name, f in event_type.fields.items() if f.required]
    if required:
        data["required"] = required
    return {
        "if": {"properties": {"type": {"const": event_type.name}}},
        "then": {
            "description": event_type.description + (" (terminal)" if event_type.terminal else ""),
            "properties": {"data": data},
        },
    }


SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "task-event": task_event,
    "workflow-event": workflow_event,
}


def text(name: str) -> str:
    """The schema ``name`` as its file holds it."""
    return json.dumps(SCHEMAS[name](), indent=2, ensure_ascii=False) + "\n"


def path(name: str) -> Path:
    return HERE / f"{name}.json"
