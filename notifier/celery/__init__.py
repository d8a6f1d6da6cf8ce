"""Wiring for Celery workers: one call, ``notifier.celery.install(app)``.

What it does, per pool:

- prefork: each child starts its own notifier in ``worker_process_init`` (the thread starts in
  milliseconds; the Redis connection is made in the background, so Celery's 4 s limit on child
  start-up is never at risk). A child that exits normally -- ``worker_max_tasks_per_child``
  recycling, warm shutdown -- drains in ``worker_process_shutdown``. A task's end does not wait
  for its events: the notifier thread sends them within ``queue.linger``, with the events of the
  tasks around it, one wake-up and one round trip for many tasks. The task after which the child
  exits (its ``worker_max_tasks_per_child``-th) waits for them as well, in case the exit signal
  does not come. With ``flush_on_task_end=True`` every task waits: one round trip while Redis is
  reachable, no wait at all while it is known to be unreachable, and at most
  TASK_END_FLUSH_TIMEOUT while an outage is still being detected (until the next publish or
  connect times out).
- solo, threads and gevent: the worker process itself publishes; it drains in
  ``worker_shutdown``. Under gevent the notifier thread is a real OS thread with its own loop,
  never a greenlet on the worker's hub, and the task-end wait lets the other greenlets run
  (``notifier.native``).
- eventlet: refused at worker start, with a pointer to gevent: its green threads would put the
  notifier on the worker's hub, the very loop it exists to stay off.

With ``[health] enabled = true`` the worker's main process serves the health endpoint from
``worker_init``, before the pool forks: one endpoint for the whole worker. Prefork children
inherit the knowledge that their parent serves, so their notifiers only write heartbeat snapshots
and never bind the port; with solo or threads the main process is also the one that publishes.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from notifier import default
from notifier.celery.canvas import Canvases, workflow_id
from notifier.celery.lifecycle import ChannelKey, Lifecycle
from notifier.config import NotifierConfig

__all__ = ["install", "pool_name", "workflow_id"]

UNSUPPORTED_POOLS = ("eventlet",)
TASK_END_FLUSH_TIMEOUT = 0.2  # the most a task's end waits for a Redis believed reachable


def install(
    app: Celery,
    config: str | NotifierConfig | None = None,
    *,
    lifecycle: bool = True,
    channel_key: ChannelKey | None = None,
    flush_on_task_end: bool = False,
    workflows: bool = True,
) -> None:
    """Wire the default notifier into ``app``'s workers.

    ``config`` is what :func:`notifier.configure` takes (None: the default lookup). It is loaded
    now, so that a configuration mistake fails at import time, not in a worker child.
    ``lifecycle``: publish ``started``, ``retrying`` and exactly one terminal event (``completed``,
    ``failed``, ``revoked``) for every task run, from Celery's signals (``lifecycle``).
    ``channel_key(task_name, task_id, args, kwargs)`` names the channel for them (default: the
    Celery task id; None: no lifecycle events for that task). With the lifecycle, a canvas (a
    chain, a group, a chord) also gets a workflow channel (``notifier.workflows``):
    :func:`workflow_id` of what its ``apply_async`` returned names it. ``workflows=False``
    leaves them out; it is the process that applies a canvas that decides.
    ``flush_on_task_end=True``: every task waits, when it ends, until its events are in Redis
    (one round trip each), instead of only the last task of a child that is going to exit. It
    closes the window (``queue.linger`` and a round trip after each task's end) in which a child
    killed by a signal takes the events it still holds with it.
    """
    handlers = _Handlers(default.configure(config), flush_on_task_end)
    for signal, receiver in (
        (signals.worker_init, handlers.on_worker_init),
        (signals.worker_process_init, handlers.on_child_start),
        (signals.worker_process_shutdown, handlers.on_child_exit),
        (signals.worker_shutdown, handlers.on_worker_exit),
        (signals.task_postrun, handlers.on_task_end),
    ):
        # weak=False: the receivers are bound methods of an object nothing else keeps alive.
        # dispatch_uid: installing twice replaces the first wiring instead of doubling it.
        signal.connect(receiver, weak=False, dispatch_uid=f"notifier.{receiver.__name__}")
    # Installing again with lifecycle=False (or workflows=False) turns it off.
    if lifecycle:
        Lifecycle(channel_key).connect()
    else:
        Lifecycle.disconnect()
    if lifecycle and workflows:
        Canvases().connect(app)
    else:
        Canvases.disconnect()


class _Handlers:
    def __init__(self, config: NotifierConfig, flush_on_task_end: bool) -> None:
        self.config = config
        self.flush_on_task_end = flush_on_task_end
        # The worker's worker_max_tasks_per_child (set in the main process, before the pool
        # forks), and how many tasks this process has ended: the last one before a recycling
        # waits for its events.
        self.max_tasks_per_child = 0
        self.tasks_ended = 0

    def on_worker_init(self, sender: Any = None, **_: Any) -> None:
        limit = getattr(sender, "max_tasks_per_child", None)
        self.max_tasks_per_child = limit if isinstance(limit, int) and limit > 0 else 0
        pool = pool_name(getattr(sender, "pool_cls", None))
        if pool in UNSUPPORTED_POOLS:
            # Signal.send() swallows Exceptions; SystemExit stops the worker with this message.
            raise SystemExit(
                f"notifier: the {pool} pool is not supported: its green threads would put the "
                "notifier thread on the worker's hub. Use -P gevent for the same cooperative "
                "model (supported: the notifier runs on a real thread there), or prefork, "
                "threads or solo."
            )
        if self.config.health.enabled:
            from notifier import health  # prometheus_client is imported only where it is used

            health.ensure_endpoint(self.config)

    def on_child_start(self, **_: Any) -> None:
        self.tasks_ended = 0
        default.get_notifier().start()

    def on_child_exit(self, **_: Any) -> None:
        default.shutdown()

    def on_worker_exit(self, **_: Any) -> None:
        default.shutdown()

    def on_task_end(self, **_: Any) -> None:
        self.tasks_ended += 1
        if not self.flush_on_task_end and self.tasks_ended != self.max_tasks_per_child:
            return  # sent within queue.linger, with the next tasks' events
        notifier = default.get_notifier()
        if notifier.integration.connected:  # no snapshot of the counters under their lock
            notifier.flush(TASK_END_FLUSH_TIMEOUT)


def pool_name(pool_cls: object) -> str:
    """'prefork', 'gevent', ... from a worker's pool setting (a name or a class)."""
    if isinstance(pool_cls, str):
        return pool_cls.rsplit(".", 1)[-1].split(":")[-1].lower()
    module = getattr(pool_cls, "__module__", "") or ""
    return module.rsplit(".", 1)[-1].lower()
