"""A user's own Celery app for the workflow tests: canvases of plain tasks, one of which may be
killed. Configured as apps.celery_apps configures the tests' apps; every task goes to
$WORKFLOW_QUEUE, the test worker's own queue.

Run as a program it is the process that applies a canvas, as a web application would:
``python -m apps.workflow_app SHAPE`` applies it, prints "WORKFLOW <its workflow id>", and drains
its notifier (which sends the workflow's declarations) before it exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from celery import chain, chord, group
from celery.canvas import Signature

import notifier
import notifier.celery

from apps.celery_apps import celery_test_app

app = celery_test_app("workflow_app")
app.conf.task_default_queue = os.environ.get("WORKFLOW_QUEUE", "celery")
notifier.celery.install(app, None)


@app.task(name="wf.add")
def add(x: int, y: int = 1) -> int:
    return x + y


@app.task(name="wf.part", bind=True)
def part(self: Any, i: int) -> int:
    notifier.publish_progress(self.request.id, 50, message=f"part {i} half done")
    return i


@app.task(name="wf.die", bind=True)
def die(self: Any, i: int) -> None:
    notifier.flush(30)  # its started event first: a SIGKILL loses what is still queued
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="wf.stuck", time_limit=1)
def stuck() -> None:
    time.sleep(60)  # the worker's main process kills it at the hard time limit


@app.task(name="wf.total")
def total(results: list[int]) -> int:
    return sum(results)


SIZES = {"chain": 3, "group": 50, "chord": 20, "nested": 5}
KILLED = 17  # the member of the group that dies


def canvas(shape: str) -> Signature:
    if shape == "chain":
        return chain(add.s(1), add.s(), add.s())
    if shape == "group":
        return group(die.s(i) if i == KILLED else part.s(i) for i in range(SIZES["group"]))
    if shape == "chord":
        return chord((part.s(i) for i in range(SIZES["chord"])), total.s())
    if shape == "stuck":
        return chain(add.s(1), stuck.si(), add.s())
    if shape == "nested":
        return chain(add.s(1), group(part.si(i) for i in range(SIZES["nested"])), total.s())
    raise SystemExit(f"unknown shape {shape!r}")


if __name__ == "__main__":
    result = canvas(sys.argv[1]).apply_async()
    # One write: print() writes its parts one by one, and the notifier thread's log lines go to
    # the same stdout, so one of them could land between "WORKFLOW" and the id.
    sys.stdout.write(f"WORKFLOW {notifier.celery.workflow_id(result)}\n")
    sys.stdout.flush()
    notifier.shutdown()
