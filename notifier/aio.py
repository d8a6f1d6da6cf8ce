"""Small asyncio helpers shared by the notifier thread, the consumer and the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None, *also: type[BaseException]) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has ended, so that nothing it
    holds outlives the caller's close. Its CancelledError, and the exceptions in ``also``, are
    the expected way for it to end and are not raised."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, *also):
        await task
