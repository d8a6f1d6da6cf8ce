"""``Packer``: a batch of events as the RESP commands it sends, and the replies read back per
event: no Redis, milliseconds. The commands are checked against RESP written out here."""

from __future__ import annotations

from notifier.batch import Packer
from notifier.config import HistoryConfig, NotifierConfig
from notifier.link import ReplyError
from notifier.naming import Naming
from notifier.workflows.script import SCRIPT
from notifier.workflows.steps import Step

PLAIN = Naming("task:", "task-history:")


def resp(*args: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def packer(history: bool = False, naming: Naming = PLAIN) -> Packer:
    config = NotifierConfig(history=HistoryConfig(enabled=history, maxlen=100, ttl_seconds=60))
    return Packer(config, naming)


def test_without_history_each_event_is_one_publish_to_its_tasks_channel() -> None:
    """In batch order, one PUBLISH per event, and as many replies to wait for."""
    packed = packer().pack([("t1", b'{"a":1}'), ("t2", b'{"b":2}'), ("t1", b'{"c":3}')])
    expected = (
        resp(b"PUBLISH", b"task:t1", b'{"a":1}')
        + resp(b"PUBLISH", b"task:t2", b'{"b":2}')
        + resp(b"PUBLISH", b"task:t1", b'{"c":3}')
    )
    assert (expected, 3) == packed


def test_with_history_each_event_is_stored_then_published_and_each_task_expires_once() -> None:
    """XADD then PUBLISH per event, then one EXPIRE per task in order of first appearance."""
    packed = packer(history=True).pack([("t1", b"e1"), ("t2", b"e2"), ("t1", b"e3")])
    expected = b"".join(
        [
            resp(b"XADD", b"task-history:t1", b"MAXLEN", b"100", b"*", b"event", b"e1"),
            resp(b"PUBLISH", b"task:t1", b"e1"),
            resp(b"XADD", b"task-history:t2", b"MAXLEN", b"100", b"*", b"event", b"e2"),
            resp(b"PUBLISH", b"task:t2", b"e2"),
            resp(b"XADD", b"task-history:t1", b"MAXLEN", b"100", b"*", b"event", b"e3"),
            resp(b"PUBLISH", b"task:t1", b"e3"),
            resp(b"EXPIRE", b"task-history:t1", b"60"),
            resp(b"EXPIRE", b"task-history:t2", b"60"),
        ]
    )
    assert (expected, 8) == packed


def test_on_a_cluster_the_names_are_hash_tagged_and_the_verb_is_spublish() -> None:
    """A task's channel and stream share a slot, and its event stays within that shard."""
    sharded = Naming("task:", "task-history:", sharded=True)
    packed = packer(history=True, naming=sharded).pack([("t1", b"e")])
    expected = (
        resp(b"XADD", b"task-history:{t1}", b"MAXLEN", b"100", b"*", b"event", b"e")
        + resp(b"SPUBLISH", b"task:{t1}", b"e")
        + resp(b"EXPIRE", b"task-history:{t1}", b"60")
    )
    assert (expected, 3) == packed


def test_a_publish_error_fails_its_own_event_only() -> None:
    """An error reply to one PUBLISH marks that event failed and is kept to be logged."""
    error = ReplyError("ERR something")
    outcome = packer().read([("t1", b"a"), ("t2", b"b")], [1, error])
    assert [False, True] == outcome.failed
    assert [error] == outcome.publish_errors
    assert ([], None) == (outcome.history_errors, outcome.again)


def test_a_history_error_is_logged_but_the_published_event_still_counts() -> None:
    """An XADD or EXPIRE error goes to history_errors; the event whose PUBLISH worked is sent."""
    xadd, expire = ReplyError("OOM no memory"), ReplyError("ERR expire")
    batch = [("t1", b"a"), ("t1", b"b")]
    outcome = packer(history=True).read(batch, [xadd, 1, b"1-1", 1, expire])
    assert [False, False] == outcome.failed
    assert [xadd, expire] == outcome.history_errors
    assert [] == outcome.publish_errors


def test_replies_are_split_per_event_and_the_expires_follow() -> None:
    """per_event gives each event its (XADD, PUBLISH) replies; tail the EXPIREs after them."""
    p = packer(history=True)
    batch = [("t1", b"a"), ("t2", b"b")]
    replies = [b"1-1", 1, b"2-1", 0, 1, 1]
    assert [(b"1-1", 1), (b"2-1", 0)] == p.per_event(batch, replies)
    assert [1, 1] == p.tail(batch, replies)
    assert ["t1", "t2"] == Packer.expired(batch)


def test_a_step_the_node_has_no_script_for_is_sent_again_with_the_whole_script() -> None:
    """NOSCRIPT is not a failure: the step is marked to go again, and the next pack sends
    EVAL with the script where it sent EVALSHA."""
    p = packer()
    batch = [("t1", b"a"), ("workflow:w1", Step("w1", member="t1", change="running"))]
    first, replies = p.pack(batch)
    assert 2 == replies
    assert first.startswith(resp(b"PUBLISH", b"task:t1", b"a"))
    assert b"$7\r\nEVALSHA\r\n" in first and SCRIPT not in first
    outcome = p.read(batch, [1, ReplyError("NOSCRIPT No matching script.")])
    assert ([False, False], [False, True], []) == (
        outcome.failed,
        outcome.again,
        outcome.publish_errors,
    )
    again, _ = p.pack(batch)
    assert b"$4\r\nEVAL\r\n" in again and SCRIPT in again
