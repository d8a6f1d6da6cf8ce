"""The built-in workflow steps: async functions registered by name.

A workflow lists steps as ``"name"`` or ``"name:argument"``, for example
``["noop", "sleep:0.2", "cpu:0.05"]``. ``crash`` kills the worker child running it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

StepFunction = Callable[["StepContext"], Awaitable[None]]

REGISTRY: dict[str, StepFunction] = {}


class UnknownStep(LookupError):
    """A workflow names a step that is not registered."""


class StepFailed(RuntimeError):
    """A step reported failure (the ``fail`` step, or a step's own check)."""


@dataclass(frozen=True)
class StepContext:
    task_id: str
    index: int
    name: str
    argument: str | None


def step(name: str) -> Callable[[StepFunction], StepFunction]:
    def register(function: StepFunction) -> StepFunction:
        REGISTRY[name] = function
        return function

    return register


def resolve(spec: str) -> tuple[str, str | None, StepFunction]:
    """``(name, argument, function)`` for a step spec; UnknownStep names what is known."""
    name, _, argument = spec.partition(":")
    function = REGISTRY.get(name)
    if function is None:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownStep(f"unknown step {name!r} (known steps: {known})")
    return name, argument or None, function


def _seconds(ctx: StepContext, default: float) -> float:
    try:
        return float(ctx.argument) if ctx.argument is not None else default
    except ValueError:
        raise StepFailed(
            f"step {ctx.name!r} takes a number of seconds, got {ctx.argument!r}"
        ) from None


@step("noop")
async def noop(ctx: StepContext) -> None:
    """Does nothing."""


@step("sleep")
async def sleep(ctx: StepContext) -> None:
    """Waits on the event loop (I/O-bound work), 0.1 s unless given: ``sleep:0.5``."""
    await asyncio.sleep(_seconds(ctx, 0.1))


@step("cpu")
async def cpu(ctx: StepContext) -> None:
    """Hashes for the given time (CPU-bound work), 0.05 s unless given: ``cpu:0.2``."""
    deadline = time.monotonic() + _seconds(ctx, 0.05)
    digest = ctx.task_id.encode()
    while time.monotonic() < deadline:
        for _ in range(1000):
            digest = hashlib.sha256(digest).digest()
        await asyncio.sleep(0)


@step("crash")
async def crash(ctx: StepContext) -> None:
    """Kills the worker process running the step with SIGKILL, as the kernel's OOM killer
    would: no except block runs. The worker's main process reports the run as lost."""
    os.kill(os.getpid(), signal.SIGKILL)


@step("fail")
async def fail(ctx: StepContext) -> None:
    """Raises StepFailed with the given message: ``fail:disk full``."""
    raise StepFailed(ctx.argument or f"step {ctx.index + 1} failed")
