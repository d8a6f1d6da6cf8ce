"""Progress coalescing's bookkeeping, ``Coalescer`` (the open slots) and ``Gate`` (when a task
may send again, and the slots held until then): no Redis, milliseconds. The whole path, through
a real notifier and Redis, is tests/core/test_coalesce.py."""

from __future__ import annotations

import math

from notifier.coalesce import Coalescer, Gate, Slot


def test_progress_for_a_task_without_an_open_slot_is_not_absorbed() -> None:
    """replace says False when the task has no open slot: the caller queues a new one."""
    assert not Coalescer().replace("t1", b"10%")


def test_later_progress_replaces_the_open_slots_payload() -> None:
    """While a task's slot is open, each progress event takes the place of the one before."""
    coalescer = Coalescer()
    slot = Slot(b"10%")
    coalescer.register("t1", slot)
    assert coalescer.replace("t1", b"20%")
    assert coalescer.replace("t1", b"30%")
    assert b"30%" == coalescer.take("t1", slot)


def test_a_taken_slot_takes_no_more_replacements() -> None:
    """Once the notifier thread takes a slot to send it, the next progress needs a new slot."""
    coalescer = Coalescer()
    slot = Slot(b"10%")
    coalescer.register("t1", slot)
    coalescer.take("t1", slot)
    assert not coalescer.replace("t1", b"20%")
    assert b"10%" == slot.payload


def test_the_terminal_event_makes_the_open_slot_urgent_and_closes_it() -> None:
    """A task's end hurries its open slot out, and no progress goes into it after the end."""
    coalescer = Coalescer()
    slot = Slot(b"90%")
    coalescer.register("t1", slot)
    coalescer.ended("t1", now=5.0)
    assert slot.urgent
    assert not coalescer.replace("t1", b"95%")


def test_taking_an_old_slot_leaves_the_tasks_newer_slot_open() -> None:
    """A slot closed by the task's end, then taken, does not close the slot of its next run."""
    coalescer = Coalescer()
    old, new = Slot(b"old"), Slot(b"new")
    coalescer.register("t1", old)
    coalescer.ended("t1", now=1.0)
    coalescer.register("t1", new)
    assert b"old" == coalescer.take("t1", old)
    assert coalescer.replace("t1", b"newer")
    assert b"newer" == new.payload


def test_endings_are_remembered_only_while_tracking() -> None:
    """ended_since answers from the endings kept while tracking is on, and never before."""
    untracked = Coalescer()
    untracked.ended("t1", now=5.0)
    assert not untracked.ended_since("t1", 0.0)
    tracked = Coalescer(tracking=True)
    tracked.ended("t1", now=5.0)
    assert (True, True, False) == (
        tracked.ended_since("t1", 4.0),
        tracked.ended_since("t1", 5.0),
        tracked.ended_since("t1", 6.0),
    )
    assert not tracked.ended_since("t2", 0.0)


def test_a_task_that_never_sent_is_due_at_once_and_then_one_interval_after_each_send() -> None:
    """The first progress of a task goes out at once; the next one interval after it."""
    gate = Gate(interval=1.0)
    assert -math.inf == gate.due("t1")
    gate.sent("t1", now=10.0)
    assert 11.0 == gate.due("t1")


def test_ready_returns_the_slots_that_fell_due_in_their_order_and_keeps_the_rest() -> None:
    """Held slots come out when their time has come, earliest due first; later ones stay."""
    gate = Gate(interval=1.0)
    a, b, c = Slot(b"a"), Slot(b"b"), Slot(b"c")
    gate.hold("t3", c, due=13.0)
    gate.hold("t1", a, due=11.0)
    gate.hold("t2", b, due=12.0)
    assert 11.0 == gate.next_due()
    assert [("t1", a), ("t2", b)] == gate.ready(now=12.0)
    assert (1, 13.0) == (gate.holding, gate.next_due())
    assert [] == gate.ready(now=12.5)


def test_urgent_returns_only_the_slots_whose_task_ended() -> None:
    """Slots marked urgent leave the gate at once, due or not; the others stay held."""
    gate = Gate(interval=1.0)
    calm, hurried = Slot(b"calm"), Slot(b"hurried")
    gate.hold("t1", calm, due=11.0)
    gate.hold("t2", hurried, due=12.0)
    assert [] == gate.urgent()
    hurried.urgent = True
    assert [("t2", hurried)] == gate.urgent()
    assert [("t1", calm)] == gate.ready(now=11.0)


def test_release_hands_back_every_held_slot_in_due_order() -> None:
    """At close, the gate lets everything it holds go, due or not, and holds nothing after."""
    gate = Gate(interval=1.0)
    slots = {due: Slot(b"%d" % due) for due in (15, 11, 14, 12, 13)}
    for due, slot in slots.items():
        gate.hold(f"t{due}", slot, due=float(due))
    assert [(f"t{due}", slots[due]) for due in (11, 12, 13, 14, 15)] == gate.release()
    assert (0, None) == (gate.holding, gate.next_due())
