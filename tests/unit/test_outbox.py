"""``Outbox``, the bounded buffer between callers and the notifier thread: no Redis,
milliseconds."""

from __future__ import annotations

import asyncio
import threading

import pytest

from notifier.batch import Item
from notifier.outbox import Closed, Full, Outbox


def put(outbox: Outbox, lock: threading.Lock, *items: Item) -> None:
    """Put as a caller does: with the ledger's lock held."""
    with lock:
        for item in items:
            outbox.put(item)


def take(outbox: Outbox, lock: threading.Lock, limit: int) -> tuple[list[Item], bool]:
    with lock:
        return outbox.take(limit)


def test_take_returns_the_events_oldest_first() -> None:
    """What callers put comes out in the order they put it, and the buffer is then empty."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)
    put(outbox, lock, ("t1", b"a"), ("t2", b"b"), ("t1", b"c"))
    assert ([("t1", b"a"), ("t2", b"b"), ("t1", b"c")], False) == take(outbox, lock, 10)
    assert 0 == outbox.size()


def test_take_takes_at_most_its_limit_and_leaves_the_rest_in_order() -> None:
    """A take bounded by ``limit`` leaves the newer events waiting, oldest first."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)
    put(outbox, lock, *[("t", b"%d" % i) for i in range(5)])
    assert ([("t", b"0"), ("t", b"1")], False) == take(outbox, lock, 2)
    assert ([("t", b"2"), ("t", b"3"), ("t", b"4")], False) == take(outbox, lock, 10)


def test_a_full_buffer_refuses_the_next_event() -> None:
    """At ``maxsize`` events, put raises Full and the buffer keeps what it had."""
    lock = threading.Lock()
    outbox = Outbox(2, lock, burst=2)
    put(outbox, lock, ("t", b"1"), ("t", b"2"))
    with pytest.raises(Full):
        put(outbox, lock, ("t", b"3"))
    assert 2 == outbox.size()


def test_evict_makes_room_by_removing_the_oldest_event() -> None:
    """After Full, evicting hands back the oldest event, and a newer one fits in its place."""
    lock = threading.Lock()
    outbox = Outbox(2, lock, burst=2)
    put(outbox, lock, ("t", b"1"), ("t", b"2"))
    with lock:
        assert ("t", b"1") == outbox.evict()
    put(outbox, lock, ("t", b"3"))
    assert ([("t", b"2"), ("t", b"3")], False) == take(outbox, lock, 10)


def test_a_closed_buffer_refuses_new_events_and_hands_over_what_it_holds() -> None:
    """After close, put raises Closed; take still returns what was there, then says it is done."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)
    put(outbox, lock, ("t", b"1"), ("t", b"2"))
    outbox.close()
    with pytest.raises(Closed):
        put(outbox, lock, ("t", b"3"))
    assert ([("t", b"1")], False) == take(outbox, lock, 1)
    assert ([("t", b"2")], True) == take(outbox, lock, 1)


def test_discard_empties_the_buffer_and_closes_it_for_good() -> None:
    """Discarded events are gone, and no new event is accepted."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)
    put(outbox, lock, ("t", b"1"))
    outbox.discard()
    assert 0 == outbox.size()
    with pytest.raises(Closed):
        put(outbox, lock, ("t", b"2"))


def test_wait_returns_at_once_when_events_are_already_there() -> None:
    """The notifier thread never sleeps on the doorbell while events wait to be taken."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)

    async def main() -> None:
        outbox.open()
        put(outbox, lock, ("t", b"1"))
        await asyncio.wait_for(outbox.wait(), 5)

    asyncio.run(main())


def test_a_put_from_another_thread_wakes_the_waiting_notifier_thread() -> None:
    """A caller's put rings the doorbell the notifier thread sleeps on: no lost wake-up."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)

    async def main() -> None:
        outbox.open()
        waiting = asyncio.create_task(outbox.wait())
        await asyncio.sleep(0)  # one loop step: the wait is now asleep on the doorbell
        assert not waiting.done()
        caller = threading.Thread(target=put, args=(outbox, lock, ("t", b"1")))
        caller.start()
        caller.join()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(main())
    assert ([("t", b"1")], False) == take(outbox, lock, 10)


def test_close_from_another_thread_wakes_the_waiting_notifier_thread() -> None:
    """Closing ends a wait on an empty buffer, so the notifier thread can stop."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)

    async def main() -> None:
        outbox.open()
        waiting = asyncio.create_task(outbox.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        closer = threading.Thread(target=outbox.close)
        closer.start()
        closer.join()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(main())
    assert ([], True) == take(outbox, lock, 10)


def test_a_ring_left_by_an_abandoned_wait_does_not_end_the_next_one() -> None:
    """A ring that came after a wait gave up is drained: the next wait on an empty buffer
    sleeps until its own event."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=10)

    async def main() -> None:
        outbox.open()
        abandoned = asyncio.create_task(outbox.wait())
        await asyncio.sleep(0)
        put(outbox, lock, ("t", b"1"))  # rings; the wait is cancelled before it hears it
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        take(outbox, lock, 10)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(outbox.wait(), 0.1)

    asyncio.run(main())


def test_a_dozing_wait_lets_events_gather_until_a_full_batch_or_a_nudge() -> None:
    """A dozing notifier thread is not woken by every put, only by the put that makes a full
    batch, or by a caller about to wait for its events (nudge); a nudge while it is busy makes
    it skip its next doze."""
    lock = threading.Lock()
    outbox = Outbox(10, lock, burst=3)

    async def main() -> None:
        outbox.open()
        dozing = asyncio.create_task(outbox.wait(doze=True))
        await asyncio.sleep(0)
        put(outbox, lock, ("t", b"1"), ("t", b"2"))  # not a full batch: no ring
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(dozing), 0.1)
        put(outbox, lock, ("t", b"3"))  # a full batch rings
        await asyncio.wait_for(dozing, 5)
        take(outbox, lock, 10)

        dozing = asyncio.create_task(outbox.wait(doze=True))
        await asyncio.sleep(0)
        put(outbox, lock, ("t", b"4"))
        nudger = threading.Thread(target=outbox.nudge)
        nudger.start()
        nudger.join()
        await asyncio.wait_for(dozing, 5)

        outbox.nudge()  # busy (not waiting): the next doze returns at once
        await asyncio.wait_for(outbox.wait(doze=True), 5)
        with pytest.raises(TimeoutError):  # once
            await asyncio.wait_for(outbox.wait(doze=True), 0.1)

    asyncio.run(main())


def test_wait_before_open_is_a_mistake() -> None:
    """The doorbell is made on the notifier thread first; waiting without it says so."""
    outbox = Outbox(10, threading.Lock(), burst=10)
    with pytest.raises(RuntimeError, match="open"):
        asyncio.run(outbox.wait())
