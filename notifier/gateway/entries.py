"""What the gateway hands to subscribers: an ``Entry``, one event encoded once for all of them.

An entry carries the event's JSON as published, its whole Server-Sent Events frame (also framed
as an HTTP chunk, ready for a socket), and the id of its history stream entry (``<ms>-<seq>``),
which browsers resume from; an event that is not in a stream has no id.

What Redis holds is checked again before it is framed: anyone who can write to Redis (a
publisher in another language, say) can store anything there. An entry is ``Refused`` when its
payload is not a JSON object, its stream id is not ``<ms>-<seq>``, or its type breaks the
publisher's rule (``notifier.events``: 1 to EVENT_TYPE_MAX letters, digits and ``_.:-``; an
event without a type is SSE's ``message``). A type with a line break in it would add ``id:``,
``data:`` or ``retry:`` lines of the writer's choosing to the frame. The callers skip a refused
entry, and log and count it (``Hub.entry_refused``). A payload's own line breaks (raw ``\r``,
``\n`` or ``\r\n`` between JSON tokens) each begin a new ``data:`` line: the SSE spec ends a
line at any of the three.
Plain values: nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from notifier.events import EVENT_TYPE_CHARS, EVENT_TYPE_MAX
from notifier.eventtypes import TERMINAL_TYPES

# The publisher's rule for an event type (check_event_type), as one match: bounded, so that a
# long type is refused after EVENT_TYPE_MAX + 1 characters, never scanned to its end.
_EVENT_TYPE = re.compile(f"[{EVENT_TYPE_CHARS}]{{1,{EVENT_TYPE_MAX}}}")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")  # where the SSE spec ends a line


@dataclass(frozen=True, slots=True)
class Entry:
    """One event on its way to subscribers, encoded once for all of them."""

    stream_id: tuple[int, int] | None  # None: not in the history stream
    raw_id: bytes | None
    type: str
    payload: bytes  # the event's JSON, as published
    sse: bytes  # the whole Server-Sent Events frame
    terminal: bool  # the task's run ended with it: the stream ends after it
    chunk: bytes  # the SSE frame as one HTTP/1.1 chunk, written as is to a client's socket
    text: str  # the event's JSON as text, for WebSocket text frames


@dataclass(frozen=True, slots=True)
class Refused:
    """A stored entry (or a message) that is not framed, and why, in words safe for a log line."""

    reason: str


def parse_stream_id(raw: bytes | str | None) -> tuple[int, int] | None:
    """``b"1700000000000-3"`` as ``(1700000000000, 3)``; None for anything else."""
    if raw is None:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    ms, dash, seq = text.partition("-")
    if not (dash and _is_u64(ms) and _is_u64(seq)):
        return None
    return int(ms), int(seq)


def _is_u64(part: str) -> bool:
    """ASCII digits that fit a 64-bit number (``"²".isdigit()`` is true, and int() refuses it)."""
    return 0 < len(part) <= 20 and part.isascii() and part.isdigit() and int(part) < 1 << 64


def make_entry(raw_id: bytes | None, payload: bytes, kind: str | None = None) -> Entry | Refused:
    """The entry for one event, or why it is not one to hand on (it is skipped then). ``kind``
    names the SSE event when it is not the event's own type (``reset``)."""
    stream_id = parse_stream_id(raw_id)
    if raw_id is not None and stream_id is None:
        return Refused(f"stream id {_shown(raw_id)} is not <ms>-<seq>")
    event = decode_event(payload)
    if event is None and payload != b"null":
        return Refused("not a JSON object")
    own = ""
    if event is not None:
        declared = event.get("type")
        if declared is None:
            own = "message"  # an event without a type: SSE's name for an untyped event
        elif type(declared) is str and _EVENT_TYPE.fullmatch(declared):
            own = declared
        else:
            return Refused(_type_refusal(declared))
    kind = kind or own
    head = b"event: " + kind.encode() + b"\ndata: "
    if raw_id is not None:
        head = b"id: " + raw_id + b"\n" + head
    if payload.find(b"\r") == -1:  # as orjson writes them: one line, or lines ended by \n
        data = payload.replace(b"\n", b"\ndata: ")
    else:
        data = _LINE_BREAK.sub(b"\ndata: ", payload)
    frame = head + data + b"\n\n"
    return Entry(
        stream_id,
        raw_id,
        kind,
        payload,
        frame,
        own in TERMINAL_TYPES,
        as_chunk(frame),
        payload.decode(errors="replace"),
    )


_JSON_KINDS = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


def _type_refusal(value: object) -> str:
    if type(value) is not str:
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        return f"event type is a JSON {kind}, not a string"
    if len(value) > EVENT_TYPE_MAX:
        return f"event type {_shown(value)} is over {EVENT_TYPE_MAX} characters"
    return f"event type {_shown(value)} is not letters, digits and '_.:-'"


def _shown(value: str | bytes) -> str:
    """``value``'s start as a Python literal: no line break or control character gets through."""
    return repr(value[:EVENT_TYPE_MAX]) + ("..." if len(value) > EVENT_TYPE_MAX else "")


def as_chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def decode_event(payload: bytes) -> dict[str, Any] | None:
    """The event a payload holds; None when it is not JSON or not an object."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None
