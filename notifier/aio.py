"""Small asyncio helpers shared by the notifier thread, the consumer, the gateway, and the
awaitable flush and close (which wait for the notifier thread without blocking their loop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

# Registers a wake-up that another thread will call, and returns a function that cancels it, or
# None when what it waits for has happened already (Ledger.when_settled, Thread.when_finished).
Arm = Callable[[Callable[[], None]], Callable[[], None] | None]


async def cancel_and_wait(task: asyncio.Future[Any] | None, *also: type[BaseException]) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has ended, so that nothing it
    holds outlives the caller's close. Its CancelledError, and the exceptions in ``also``, are
    the expected way for it to end and are not raised."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, *also):
        await task


async def wait_woken(arm: Arm, timeout: float) -> bool:
    """Wait, without blocking the running loop, until another thread calls the wake-up given to
    ``arm``; False when ``timeout`` seconds pass first. The wake-up is cancelled on the way out,
    whether by the wake, the timeout or the awaiting task's cancellation."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake() -> None:  # on the other thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, woken)

    cancel = arm(wake)
    if cancel is None:
        return True
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await woken
        return True
    except TimeoutError:
        return False
    finally:
        cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
