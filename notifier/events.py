"""Building, validating and encoding events. Runs on the caller's thread.

Every check happens here, before an event is queued, so that a programming error raises
:class:`InvalidEvent` at the call site and the notifier thread only ever sends valid bytes.

Wire format: one UTF-8 JSON object per message, non-ASCII text kept as is::

    {"event_id": "...", "type": "...", "task_id": "...", "timestamp": "2026-...Z", "data": {...}}
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from notifier.eventtypes import ERROR_MAX_CHARS
from notifier.exceptions import InvalidEvent

TASK_ID_MAX = 256
EVENT_TYPE_MAX = 64
# A task id names a Redis channel (and, with history, a stream key). Whitespace and control
# characters break line-based tools and logs; `*?[]` would make a PSUBSCRIBE listener match other
# tasks' channels. Everything else, non-ASCII letters included, is allowed. (The characters of a
# regular expression's class, so that notifier.schema writes the same rule.)
TASK_ID_FORBIDDEN = r"\s\x00-\x1f\x7f-\x9f*?\[\]"  # whitespace; C0, DEL and C1 controls
EVENT_TYPE_CHARS = r"A-Za-z0-9_.:-"
ID_PREFIX_BYTES = 8  # an event id: this many random bytes in hex, "-", a counter in hex
_TASK_ID_FORBIDDEN = re.compile(f"[{TASK_ID_FORBIDDEN}]")
_EVENT_TYPE = re.compile(f"[{EVENT_TYPE_CHARS}]+")
JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def _new_id_prefix() -> str:
    return os.urandom(ID_PREFIX_BYTES).hex()


# Event ids: a random per-process prefix and a counter. Unique across processes (the prefix is
# drawn again in a forked child) and a fraction of the cost of uuid4. next() on a count is atomic
# under the GIL, so ids stay unique across threads.
_id_prefix = _new_id_prefix()
_id_counter = itertools.count(1)


def _reseed_after_fork() -> None:
    global _id_prefix, _id_counter
    _id_prefix = _new_id_prefix()
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_event_id() -> str:
    return f"{_id_prefix}-{next(_id_counter):x}"


def event_id_prefix() -> str:
    """What every event id this process makes starts with (``<prefix>-<counter>``); drawn
    afresh in a forked child, so it tells apart the events of different processes."""
    return _id_prefix


# Task ids already found valid. A task publishes many events under one id, so most checks end
# here; the set is cleared when it grows past its bound (ids are short-lived: one per task).
_valid_task_ids: set[str] = set()
_VALID_TASK_IDS_MAX = 4096


def check_task_id(task_id: object) -> str:
    if type(task_id) is not str:
        raise InvalidEvent(f"task_id must be a str, got {type(task_id).__name__}")
    if task_id in _valid_task_ids:
        return task_id
    if not task_id or len(task_id) > TASK_ID_MAX:
        raise InvalidEvent(f"task_id must be 1 to {TASK_ID_MAX} characters, got {len(task_id)}")
    if _TASK_ID_FORBIDDEN.search(task_id):
        raise InvalidEvent(
            f"task_id must not contain whitespace, control characters or any of '*?[]', "
            f"got {task_id!r}"
        )
    if not task_id.isascii():
        _check_utf8(task_id, "task_id")
    if len(_valid_task_ids) >= _VALID_TASK_IDS_MAX:
        _valid_task_ids.clear()
    _valid_task_ids.add(task_id)  # set.add and set.clear are atomic under the GIL
    return task_id


def check_event_type(event_type: object) -> str:
    if type(event_type) is not str or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidEvent(
            f"event type must be a str of letters, digits and '_.:-', got {event_type!r}"
        )
    if len(event_type) > EVENT_TYPE_MAX:
        raise InvalidEvent(f"event type must be at most {EVENT_TYPE_MAX} characters")
    return event_type


def _check_utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(f"{what} contains a lone surrogate, which UTF-8 cannot encode") from None


def encode_event(task_id: str, event_type: str, data: Mapping[str, Any], max_bytes: int) -> bytes:
    """The wire bytes of one event; raises InvalidEvent for anything that cannot be sent as is.

    ``task_id`` and ``event_type`` must already have passed their checks.
    """
    if type(data) is not dict and not isinstance(data, Mapping):  # the ABC check is the slow one
        raise InvalidEvent(f"event data must be a mapping, got {type(data).__name__}")
    envelope = {
        "event_id": f"{_id_prefix}-{next(_id_counter):x}",  # new_event_id(), without the call
        "type": event_type,
        "task_id": task_id,
        "timestamp": datetime.now(UTC),
        "data": data,
    }
    try:
        payload = orjson.dumps(envelope, option=JSON_OPTIONS)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidEvent(f"event data is not JSON-serialisable: {exc}") from None
    # orjson writes NaN and infinities as null, which would change the data silently. They are
    # rare, so look for them only when the output has a null in it at all. (find, not "in":
    # bytes.__contains__ first tries its argument as an int, and pays for the TypeError.)
    if payload.find(b"null") != -1 and _has_non_finite(data):
        raise InvalidEvent("event data contains NaN or infinity, which JSON cannot represent")
    if len(payload) > max_bytes:
        raise InvalidEvent(
            f"encoded event is {len(payload)} bytes, over queue.max_event_bytes ({max_bytes})"
        )
    # orjson's result keeps the memory of its initial write buffer: about 4 KiB for a 200-byte
    # event, for as long as the event waits in the queue. A copy holds only its own bytes, which
    # keeps a full queue near maxsize x event size (and saves a page fault per call).
    return bytes(memoryview(payload))


def _has_non_finite(value: Any, depth: int = 0) -> bool:
    if depth > 300:  # deeper than orjson encodes; it would have refused already
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_has_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v, depth + 1) for v in value)
    if isinstance(value, enum.Enum):
        return _has_non_finite(value.value, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(
            _has_non_finite(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
        )
    return False


def encode_failure(task_id: str, error: object, extra: Mapping[str, Any], max_bytes: int) -> bytes:
    """The wire bytes of a ``failed`` event. Never raises because of ``error``, whatever it is:
    an error text too big for ``max_bytes`` is cut to fit, with a marker."""
    text, error_type = describe_error(error)
    if error_type is None:
        data: dict[str, Any] = {**extra, "error": text}
    else:
        data = {**extra, "error": text, "error_type": error_type}
    try:
        return encode_event(task_id, "failed", data, max_bytes)
    except InvalidEvent:
        if len(text) <= len(_FIT_MARKER):
            raise  # the error text is not what is wrong: the extras are the caller's to fix
    data["error"] = ""
    empty = len(encode_event(task_id, "failed", data, max_bytes))
    spare = max_bytes - empty - len(_FIT_MARKER) - _ENVELOPE_SLACK
    data["error"] = text.encode()[: max(0, spare)].decode("utf-8", "ignore") + _FIT_MARKER
    return encode_event(task_id, "failed", data, max_bytes)


_FIT_MARKER = "... [truncated to fit queue.max_event_bytes]"
# The event that is sent is not the one measured: its id's counter may have gained a digit, and
# its timestamp may have microseconds where the other's had none (orjson leaves out ".000000").
_ENVELOPE_SLACK = 8


def describe_error(error: object) -> tuple[str, str | None]:
    """``(text, error_type)`` for any object; never raises for an ordinary exception.

    An exception becomes ``"ExcType: message"``; text over ERROR_MAX_CHARS is cut with a marker.
    """
    error_type = type(error).__name__ if isinstance(error, BaseException) else None
    try:
        if isinstance(error, str):
            text = str.__str__(error)  # a plain copy: a str subclass's own methods may raise
        else:
            message = str.__str__(str(error))
            text = f"{error_type}: {message}" if error_type and message else (error_type or message)
    except Exception as exc:  # a broken __str__ must not take the failure report with it
        text = f"<unprintable {type(error).__name__}: str() raised {type(exc).__name__}>"
        text = f"{error_type}: {text}" if error_type else text
    if not text:  # publish_failed("") says nothing; a browser must still be told something
        text = f"<empty {type(error).__name__}>"
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > ERROR_MAX_CHARS:  # rare: the test saves the call to truncate()
        text = truncate(text, ERROR_MAX_CHARS)
    return text, error_type


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"... [truncated, {len(text)} chars in all]"
    return text[: max(0, limit - len(marker))] + marker
