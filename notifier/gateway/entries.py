"""What the gateway hands to subscribers: an ``Entry``, one event encoded once for all of them.

An entry carries the event's JSON as published, its whole Server-Sent Events frame (also framed
as an HTTP chunk, ready for a socket), and the id of its history stream entry (``<ms>-<seq>``),
which browsers resume from; an event that is not in a stream has no id.
Plain values: nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from notifier.eventtypes import TERMINAL_TYPES


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


def make_entry(raw_id: bytes | None, payload: bytes, kind: str | None = None) -> Entry | None:
    """The entry for one event; None when the payload is not an event (it is skipped).
    ``kind`` names the SSE event when it is not the event's own type (``reset``)."""
    event = decode_event(payload)
    if event is None and payload != b"null":
        return None
    own = str(event.get("type") or "message") if event is not None else ""
    kind = kind or own
    lines = [b"id: " + raw_id] if raw_id is not None else []
    lines.append(b"event: " + kind.encode())
    lines += [b"data: " + line for line in payload.split(b"\n")]
    frame = b"\n".join(lines) + b"\n\n"
    terminal = own in TERMINAL_TYPES
    return Entry(
        parse_stream_id(raw_id),
        raw_id,
        kind,
        payload,
        frame,
        terminal,
        as_chunk(frame),
        payload.decode(errors="replace"),
    )


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
