"""A subscriber's push: what one read of a task's stream hands to a waiting client goes out in
one write, in order, without repeats, and never past a terminal entry or a busy socket.

Plain values in one process: the socket is a ``Sink`` that records its writes (the gateway's
own seam, ``subscriber.Sink``); the socket path itself runs in tests/gateway/test_gateway*.py.
"""

from __future__ import annotations

import json

import pytest

from notifier.gateway.entries import Entry, make_entry
from notifier.gateway.subscriber import Subscriber

pytestmark = pytest.mark.timeout(30)


class Socket:
    """A client's socket as the subscriber sees it: ready or not, and what was written."""

    def __init__(self, ready: bool = True) -> None:
        self.is_ready = ready
        self.writes: list[bytes] = []

    def ready(self) -> bool:
        return self.is_ready

    def write(self, chunk: bytes) -> None:
        self.writes.append(chunk)


def entry(seq: int, kind: str = "progress") -> Entry:
    payload = json.dumps({"task_id": "t", "type": kind, "seq": seq}).encode()
    made = make_entry(f"1700000000000-{seq}".encode(), payload)
    assert made is not None
    return made


def waiting(socket: Socket, limit: int = 10) -> Subscriber:
    subscriber = Subscriber(limit)
    subscriber.sink = socket  # what its transport lends while it waits
    return subscriber


def test_the_entries_of_one_read_go_out_in_one_write_in_order() -> None:
    socket = Socket()
    subscriber = waiting(socket)
    entries = [entry(i) for i in range(1, 4)]
    subscriber.push(entries)
    assert [b"".join(e.chunk for e in entries)] == socket.writes
    assert not subscriber.queue


def test_entries_the_client_has_are_not_written_again() -> None:
    socket = Socket()
    subscriber = waiting(socket)
    subscriber.push([entry(1), entry(2)])
    subscriber.push([entry(2), entry(3)])
    assert [entry(1).chunk + entry(2).chunk, entry(3).chunk] == socket.writes
    subscriber.push([entry(1)])
    assert 2 == len(socket.writes)


def test_a_terminal_entry_and_what_follows_go_to_the_transport() -> None:
    socket = Socket()
    subscriber = waiting(socket)
    terminal = entry(3, "completed")
    subscriber.push([entry(1), entry(2), terminal, entry(4)])
    assert [entry(1).chunk + entry(2).chunk] == socket.writes
    assert [terminal, entry(4)] == list(subscriber.queue)


def test_a_busy_socket_or_a_buffered_entry_sends_everything_through_the_buffer() -> None:
    busy = Socket(ready=False)
    subscriber = waiting(busy)
    subscriber.push([entry(1), entry(2)])
    assert [] == busy.writes
    busy.is_ready = True
    subscriber.push([entry(3)])  # behind what is buffered: it must not overtake it
    assert [] == busy.writes
    assert [1, 2, 3] == [e.stream_id[1] for e in subscriber.take() if e.stream_id]


def test_a_full_buffer_marks_the_client_overflowed_and_takes_no_more() -> None:
    subscriber = waiting(Socket(ready=False), limit=2)
    subscriber.push([entry(i) for i in range(1, 6)])
    assert subscriber.overflowed
    assert 2 == len(subscriber.queue)
    subscriber.push([entry(6)])
    assert 2 == len(subscriber.queue)
