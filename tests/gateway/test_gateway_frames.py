"""What the gateway frames from what Redis holds: a stored entry or message whose type the
publisher would refuse (a line break in it would forge ``id:``, ``event:`` or ``retry:`` lines)
is skipped, logged once and counted, and the events around it arrive intact, in order.

The forged entries are written straight to Redis, as a publisher in another language (or anyone
who can write there) would; the SSE stream is read off a raw socket, so that the test sees the
exact bytes, and parsed as the SSE spec says a browser parses it.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifier.events import EVENT_TYPE_MAX, check_event_type
from notifier.exceptions import InvalidEvent
from notifier.gateway import issue_token
from notifier.gateway.entries import Entry, make_entry, parse_stream_id
from notifier.naming import naming_for
from notifier.testing import RedisServer, wait_until

from support.gateway import GatewayProcess
from support.helpers import new_task

pytestmark = pytest.mark.timeout(120)

FRAMED = settings(
    max_examples=40,
    deadline=None,  # each example is a request to a real server
    database=None,
    # CI (.ci/run sets NOTIFIER_CI) runs the same examples every time; local runs draw afresh.
    derandomize=bool(os.environ.get("NOTIFIER_CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Types the publisher refuses, each one a way to forge a line, or to slip past a check.
FORGED_TYPES: list[Any] = [
    "tick\nid: 9",
    "tick\revent: completed",
    "tick\r\nretry: 1",
    "tick\rretry: 1",
    "tick\n\nid: 9\nevent: completed\ndata: {}",
    "id: 9",
    "retry: 1",
    "t" * (EVENT_TYPE_MAX + 1),
    "",
    5,
    True,
    ["tick"],
    {"type": "tick"},
]
FIELDS = {"id", "event", "data", "retry"}
LINE_END = re.compile(r"\r\n|\r|\n")  # where the SSE spec ends a line


@pytest.fixture(scope="module")
def gateway(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway (with history) for the module; its log checked at the end: no traceback."""
    with GatewayProcess(redis_server.url, tmp_path_factory.mktemp("frames")) as server:
        yield server
    server.assert_clean_log()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client: the writer that no publisher checked."""
    with redis_server.client() as made:
        yield made


# Writing what a publisher would not, and reading what the gateway sends -----------------------


def payload(task: str, seq: int, kind: Any = "tick", line_break: str | None = None) -> bytes:
    """An event as JSON; with ``line_break``, raw line breaks of that kind (whitespace to JSON)
    between its tokens, where the publisher writes none."""
    event = {
        "event_id": f"{'0' * 16}-{seq:x}",
        "type": kind,
        "task_id": task,
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"seq": seq},
    }
    if line_break is None:
        return json.dumps(event).encode()
    # json.dumps escapes every line break inside a string: the raw ones are whitespace.
    return json.dumps(event, indent=1).replace("\n", line_break).encode()


class Writer:
    """A task's history stream and channel, written with redis-py as the gateway reads them."""

    def __init__(self, client: redis.Redis, gateway: GatewayProcess, task: str) -> None:
        naming = naming_for(gateway.config)
        self.client = client
        self.key, self.channel = naming.key(task), naming.channel(task)

    def write(self, message: bytes, *, stream: bool = True) -> str | None:
        """XADD (unless ``stream`` is false) then PUBLISH, as the publisher does; the entry id."""
        # "event": the field the gateway reads an entry's payload from (entries_of, in
        # notifier.consumer.connections)
        entry_id = self.client.xadd(self.key, {"event": message}).decode() if stream else None
        self.client.publish(self.channel, message)
        return entry_id


@dataclass(frozen=True)
class Event:
    id: str | None  # the id this event's own lines set (the spec also keeps an earlier one)
    type: str
    data: str


def parse_sse(body: bytes) -> tuple[list[tuple[str, str]], list[Event]]:
    """Every field as ``(name, value)`` and every event dispatched, as the SSE spec reads
    ``body``: a line ends at ``\\r\\n``, ``\\r`` or ``\\n``; one starting with ``:`` is a comment;
    a blank line dispatches the event, if it has data."""
    fields: list[tuple[str, str]] = []
    events: list[Event] = []
    kind, data, event_id = "", [], None
    for line in LINE_END.split(body.decode("utf-8", "replace"))[:-1]:  # the last has no end
        if not line:
            if data:
                events.append(Event(event_id, kind or "message", "\n".join(data)))
            kind, data, event_id = "", [], None
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields.append((name, value))
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
    return fields, events


class RawStream:
    """An SSE response read off its socket: the body as the exact bytes the gateway framed,
    the chunked transfer coding taken off."""

    def __init__(self, gateway: GatewayProcess, task: str, headers: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
        token = issue_token(task, config=gateway.config)
        request = f"GET /tasks/{task}/events?token={token} HTTP/1.1\r\nHost: gw\r\n{headers}\r\n"
        self.sock.sendall(request.encode())
        self.raw, self.body, self.ended = b"", b"", False
        while b"\r\n\r\n" not in self.raw:
            self._receive()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        self.head = head.lower()
        assert self.head.startswith(b"http/1.1 200"), head
        assert b"transfer-encoding: chunked" in self.head, head

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before the stream ended: {self.body!r}")
        self.raw += data

    def _chunk(self) -> None:
        """Read one chunk of the body; the last one (size 0) ends it."""
        while b"\r\n" not in self.raw:
            self._receive()
        size_line, rest = self.raw.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            self._receive()
            rest = self.raw.split(b"\r\n", 1)[1]
        assert b"\r\n" == rest[size : size + 2]
        self.body += rest[:size]
        self.raw = rest[size + 2 :]
        self.ended = size == 0

    def read_until(self, done: Callable[[bytes], bool]) -> bytes:
        while not self.ended and not done(self.body):
            self._chunk()
        return self.body

    def read_to_end(self) -> bytes:
        body = self.read_until(lambda _: False)
        self.sock.close()
        return body


def as_data(message: bytes) -> str:
    """An event's JSON as an SSE client gets it: each line break of any kind one ``\\n``."""
    return LINE_END.sub("\n", message.decode())


def publisher_accepts(kind: Any) -> bool:
    try:
        check_event_type(kind)
    except InvalidEvent:
        return False
    return True


def assert_framed_safely(body: bytes, expected: list[Event]) -> None:
    """Only the four SSE fields, the retry hint only first, each event line a type the
    publisher accepts, each id one of the expected events'; and exactly the expected events."""
    fields, events = parse_sse(body)
    assert ("retry", "2000") == fields[0]
    assert "retry" not in [name for name, _ in fields[1:]], body
    assert set() == {name for name, _ in fields} - FIELDS, body
    assert all(publisher_accepts(v) for n, v in fields if n == "event"), body
    ids = {e.id for e in expected}
    assert all(v in ids for n, v in fields if n == "id"), body
    assert expected == events, body


def refusals(gateway: GatewayProcess, task: str) -> list[str]:
    return [
        line
        for line in gateway.output().splitlines()
        if "gateway_entry_refused" in line and task in line
    ]


def assert_refused_once_each(gateway: GatewayProcess, task: str, reasons: list[str]) -> None:
    """One warning per refused entry, each with its reason, and nothing more comes."""
    wait_until(lambda: len(refusals(gateway, task)) >= len(reasons), 10)
    lines = refusals(gateway, task)
    assert len(reasons) == len(lines), lines
    for reason, line in zip(reasons, lines, strict=True):
        assert "warning" in line and reason in line, line


def reason_for(kind: Any) -> str:
    """The words of the refusal ``kind`` gets."""
    if type(kind) is not str:
        return "not a string"
    if len(kind) > EVENT_TYPE_MAX:
        return f"over {EVENT_TYPE_MAX} characters"
    return "is not letters, digits and '_.:-'"


def write_task(writer: Writer, task: str, *, stream: bool = True) -> tuple[list[Event], list[str]]:
    """A good event, then each forged type followed by a good event (one with raw line breaks
    in its JSON: \\r, \\r\\n, \\r\\r), then the terminal event; the good events as they should
    arrive, and the reasons the forged ones are refused for."""
    expected: list[Event] = []

    def good(seq: int, kind: str = "tick", line_break: str | None = None) -> None:
        message = payload(task, seq, kind, line_break)
        expected.append(Event(writer.write(message, stream=stream), kind, as_data(message)))

    good(0)
    breaks = ["\r", "\r\n", "\r\r", None]
    for i, kind in enumerate(FORGED_TYPES):
        writer.write(payload(task, 1000 + i, kind), stream=stream)
        good(i + 1, line_break=breaks[i % len(breaks)])
    good(len(FORGED_TYPES) + 1, "completed")
    return expected, [reason_for(kind) for kind in FORGED_TYPES]


# SSE: history, live, and messages of a task without history ---------------------------------


def test_forged_types_in_the_history_are_skipped_and_logged_once_for_all_clients(
    gateway: GatewayProcess, client: redis.Redis
) -> None:
    """Forged entries already in the stream: each client gets the good events around them,
    intact and in order, up to the terminal one, and no forged line; each is logged once."""
    task = new_task("forged-history")
    expected, reasons = write_task(Writer(client, gateway, task), task)
    for _ in range(2):
        assert_framed_safely(RawStream(gateway, task).read_to_end(), expected)
    assert_refused_once_each(gateway, task, reasons)


def test_forged_types_arriving_live_are_skipped_and_logged_once(
    gateway: GatewayProcess, client: redis.Redis
) -> None:
    """Forged entries written while a client listens: the same, through the task's feed."""
    task = new_task("forged-live")
    stream = RawStream(gateway, task)  # its 200 came once its backlog (none) was read
    expected, reasons = write_task(Writer(client, gateway, task), task)
    assert_framed_safely(stream.read_to_end(), expected)
    assert_refused_once_each(gateway, task, reasons)


def test_forged_messages_of_a_task_without_history_are_skipped(
    gateway: GatewayProcess, client: redis.Redis
) -> None:
    """Forged messages of a task whose publishers keep no history: handed on as they came,
    without an id, except the forged ones, each logged once."""
    task = new_task("forged-no-history")
    stream = RawStream(gateway, task)
    expected, reasons = write_task(Writer(client, gateway, task), task, stream=False)
    assert [None] == list({e.id for e in expected})
    assert_framed_safely(stream.read_to_end(), expected)
    assert_refused_once_each(gateway, task, reasons)


def test_a_reset_to_a_forged_latest_entry_carries_null(
    gateway: GatewayProcess, client: redis.Redis
) -> None:
    """Resuming from an id the stream does not hold, when its latest entry is forged: the reset
    carries null, not the forged event, and live events follow it."""
    task = new_task("forged-reset")
    writer = Writer(client, gateway, task)
    writer.write(payload(task, 0))
    writer.write(payload(task, 1, "tick\nid: 9"))
    stream = RawStream(gateway, task, "Last-Event-ID: 1-0\r\n")
    stream.read_until(lambda body: bool(parse_sse(body)[1]))  # the reset is out
    last = payload(task, 2, "completed")
    last_id = writer.write(last)
    expected = [Event(None, "reset", "null"), Event(last_id, "completed", as_data(last))]
    assert_framed_safely(stream.read_to_end(), expected)
    assert_refused_once_each(gateway, task, [reason_for("tick\nid: 9")])


@FRAMED
@given(
    kind=st.one_of(
        st.text(max_size=80),
        st.text(alphabet=st.sampled_from(list("\r\n: idatrys9-_.")), max_size=30),
        st.from_regex(r"[A-Za-z0-9_.:-]{1,70}", fullmatch=True),
    )
)
@example(kind="tick\r\nid: 9")
@example(kind="a" * (EVENT_TYPE_MAX + 1))
def test_whatever_the_type_text_no_line_is_forged(
    gateway: GatewayProcess, client: redis.Redis, kind: str
) -> None:
    """For any type text in the stream, the stream holds only the SSE fields, every event line
    a type the publisher accepts: an entry with any other type is skipped, the rest arrive."""
    task = new_task("any-type")
    writer = Writer(client, gateway, task)
    messages = [payload(task, 0), payload(task, 1, kind), payload(task, 2, "completed")]
    expected = [
        Event(writer.write(message), json.loads(message)["type"], as_data(message))
        for message in messages
    ]
    if not publisher_accepts(kind):
        del expected[1]
    assert_framed_safely(RawStream(gateway, task).read_to_end(), expected)


# WebSocket -----------------------------------------------------------------------------------


@pytest.mark.parametrize("live", [False, True])
def test_a_websocket_gets_the_good_events_around_forged_ones(
    gateway: GatewayProcess, client: redis.Redis, live: bool
) -> None:
    """Over WebSocket, from the history or live: the good events' JSON, in order, then close
    with 1000 after the terminal one; the forged entries are never sent."""
    task = new_task("forged-ws")
    writer = Writer(client, gateway, task)
    token = issue_token(task, config=gateway.config)
    frames: list[Any] = []
    with connect(gateway.url(f"/ws/tasks/{task}?token={token}", "ws")) as ws:
        if live:  # once the first event is in, the subscription is open: the rest come live
            first = payload(task, 999)
            writer.write(first)
            assert json.loads(first) == json.loads(ws.recv(timeout=30))
        expected, _ = write_task(writer, task)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(ws.recv(timeout=30)))
    assert closed.value.rcvd is not None and 1000 == closed.value.rcvd.code
    assert [json.loads(e.data) for e in expected] == frames


# make_entry alone: no server -----------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
STREAM_IDS = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)).map(
        lambda ms_seq: b"%d-%d" % ms_seq
    ),
    st.binary(max_size=24),
)


@settings(
    max_examples=300,
    database=None,
    derandomize=bool(os.environ.get("NOTIFIER_CI")),
)
@given(
    kind=st.one_of(
        st.text(),
        st.text(alphabet=st.sampled_from(list("\r\n: idatrys9-_.")), max_size=30),
        JSON_VALUES,
    ),
    data=JSON_VALUES,
    line_break=st.sampled_from([None, "\n", "\r", "\r\n", "\r\r", "\n\r"]),
    raw_id=STREAM_IDS,
)
@example(kind="tick\nid: 9", data={}, line_break=None, raw_id=None)
@example(kind="tick", data={"a": [1]}, line_break="\r\r", raw_id=b"1-1")
@example(kind="tick", data={}, line_break=None, raw_id=b"1-1\nevent: completed")
def test_an_entry_frames_exactly_one_event_holding_its_json_or_is_refused(
    kind: Any, data: Any, line_break: str | None, raw_id: bytes | None
) -> None:
    """For any type, data, raw line breaks in the JSON and stream id: make_entry's frame, read
    as the SSE spec says, is exactly one event, with the stream id, the type (``message`` for
    none) and the event's JSON; or the entry is refused, and then the type, the id or the JSON
    is one the publisher would not have written."""
    event = {"event_id": "0" * 16 + "-1", "type": kind, "task_id": "t", "data": data}
    message = json.dumps(event, indent=1 if line_break else None)
    message = message.replace("\n", line_break) if line_break else message
    entry = make_entry(raw_id, message.encode())
    valid_id = raw_id is None or parse_stream_id(raw_id) is not None
    valid_type = kind is None or publisher_accepts(kind)
    if not isinstance(entry, Entry):
        assert not (valid_id and valid_type and _loads(message))
        return
    assert valid_id and valid_type
    fields, events = parse_sse(entry.sse)
    sent_id = None if raw_id is None else raw_id.decode()
    assert [Event(sent_id, kind or "message", as_data(message.encode()))] == events
    assert set() == {name for name, _ in fields} - {"id", "event", "data"}
    assert json.loads(message) == json.loads(entry.text)


def _loads(message: str) -> bool:
    """Whether the gateway's JSON parser (orjson) reads ``message`` (it refuses lone
    surrogates, which json.dumps writes as escapes)."""
    try:
        orjson.loads(message)
    except orjson.JSONDecodeError:
        return False
    return True
