"""The events' JSON Schema: its files are what the publisher's own definitions write, it is a
valid draft 2020-12 schema, and it accepts exactly what the publisher makes and refuses what the
publisher refuses. Events from a real Celery worker are checked in test_celery_lifecycle.py."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from notifier import schema
from notifier.events import (
    EVENT_TYPE_MAX,
    TASK_ID_MAX,
    check_event_type,
    check_task_id,
    encode_event,
    encode_failure,
)
from notifier.eventtypes import TYPES
from notifier.exceptions import InvalidEvent

pytestmark = pytest.mark.timeout(120)
MAX_BYTES = 1 << 20
VALIDATOR = Draft202012Validator(json.loads(schema.path("task-event").read_text("utf-8")))


def problems(payload: bytes) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(orjson.loads(payload))]


@pytest.mark.parametrize("name", sorted(schema.SCHEMAS))
def test_each_schema_file_is_what_the_definitions_write(name: str) -> None:
    """After a change to events.py or eventtypes.py: python -m notifier.schema."""
    assert schema.text(name) == schema.path(name).read_text("utf-8")
    Draft202012Validator.check_schema(json.loads(schema.text(name)))


def test_notifier_schema_prints_the_file() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "notifier.cli", "schema", "task-event"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert schema.path("task-event").read_text("utf-8") == shown.stdout


HELPERS: list[tuple[str, dict[str, Any]]] = [
    ("progress", {"progress": 42.5, "message": None}),
    ("progress", {"progress": 1, "message": "step 1", "checkpoint": "a"}),
    ("completed", {"result": {"rows": [1, 2]}}),
    ("completed", {"result": None, "task": "app.export"}),
    ("started", {"task": "app.export", "retries": 0}),
    ("retrying", {"task": "t", "reason": "E: x", "error_type": "E", "countdown": 2.5}),
    ("revoked", {"task": "t", "terminated": True, "signum": "15", "expired": False}),
    ("custom.kind:v2", {"anything": [1, "two"]}),
]


@pytest.mark.parametrize(("kind", "data"), HELPERS)
def test_the_events_the_library_makes_are_valid(kind: str, data: dict[str, Any]) -> None:
    assert [] == problems(encode_event("job-1", kind, data, MAX_BYTES))


@pytest.mark.parametrize("error", [ValueError("disk full"), "", "x" * 10_000, KeyError()])
def test_every_failed_event_is_valid_whatever_the_error(error: object) -> None:
    assert [] == problems(encode_failure("job-1", error, {"task": "t"}, MAX_BYTES))
    assert [] == problems(encode_failure("job-1", error, {}, 4096))  # cut to fit


@pytest.mark.parametrize(
    ("kind", "data", "why"),
    [
        ("progress", {"message": None}, "'progress' is a required property"),
        ("progress", {"progress": "half", "message": None}, "is not of type 'number'"),
        ("failed", {"error_type": "E"}, "'error' is a required property"),
        ("revoked", {"task": "t", "terminated": 1, "signum": None, "expired": False}, "boolean"),
    ],
)
def test_a_library_type_with_the_wrong_data_is_refused(
    kind: str, data: dict[str, Any], why: str
) -> None:
    """What the schema promises of the library's own types, each a check that can fail."""
    found = problems(encode_event("job-1", kind, data, MAX_BYTES))
    assert any(why in p for p in found), found


@settings(max_examples=300, deadline=None, database=None)
@given(task_id=st.text(min_size=1, max_size=TASK_ID_MAX + 2))
@example(task_id="with space")
@example(task_id="0\n")  # $ matches before a final newline in Python's dialect
@example(task_id="bom\ufeffinside")  # whitespace to ECMA-262's \s, not to Python's
@example(task_id="nbsp\u00a0")
@example(task_id="c1\x85")
@example(task_id="star*")
@example(task_id="задача-7")
def test_the_schema_and_the_publisher_agree_on_every_task_id(task_id: str) -> None:
    """The task id pattern is the publisher's rule, character for character."""
    try:
        check_task_id(task_id)
    except InvalidEvent:
        accepted = False
    else:
        accepted = True
    if any(0xD800 <= ord(c) <= 0xDFFF for c in task_id):
        assert not accepted  # a lone surrogate cannot be sent at all
        return
    event = {"event_id": "0123456789abcdef-1", "type": "custom", "task_id": task_id}
    event |= {"timestamp": "2026-12-03T19:00:00.5Z", "data": {}}
    assert accepted == VALIDATOR.is_valid(event)


OWN_TYPES = frozenset(t.name for t in TYPES)


@settings(max_examples=200, deadline=None, database=None)
@given(kind=st.text(max_size=EVENT_TYPE_MAX + 2))
@example(kind="progress\n")
def test_the_schema_and_the_publisher_agree_on_every_event_type(kind: str) -> None:
    """An application's own event type is valid to the schema exactly when the publisher takes
    it (the library's own types, whose data has required fields, are tested on their own)."""
    assume(kind not in OWN_TYPES)
    try:
        check_event_type(kind)
    except InvalidEvent:
        accepted = False
    else:
        accepted = True
    event = {"event_id": "0123456789abcdef-1", "type": kind, "task_id": "t"}
    event |= {"timestamp": "2026-12-03T19:00:00Z", "data": {}}
    assert accepted == VALIDATOR.is_valid(event)
