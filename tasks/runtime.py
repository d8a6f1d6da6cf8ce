"""The worker's own event loop for the tasks' async code, and ``run_async`` to run on it.

One loop per worker process and thread (the threads pool runs tasks on several threads at once,
and a loop runs one coroutine at a time). A forked child makes its own: it never runs, or closes,
the loops it inherited. The notifier never uses these loops; it has its own, on its own thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_local = threading.local()
# Every loop made here, with the pid that made it; inherited ones stay referenced but untouched.
_made: list[tuple[int, asyncio.AbstractEventLoop]] = []


def worker_loop() -> asyncio.AbstractEventLoop:
    """This process's and thread's loop, created on first use."""
    pid = os.getpid()
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or getattr(_local, "pid", None) != pid or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop, _local.pid = loop, pid
        _made.append((pid, loop))  # list.append is atomic under the GIL
    return loop


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the worker's loop, from synchronous task code."""
    return worker_loop().run_until_complete(coro)


def close_worker_loops() -> None:
    """Close the idle loops this process made, at worker shutdown."""
    pid = os.getpid()
    for owner, loop in list(_made):
        if owner == pid and not loop.is_running() and not loop.is_closed():
            loop.close()
