"""Waiting for a replica: a batch counts as published once a replica of its master has it.

Redis replicates asynchronously. A master that fails after it acknowledged a batch but before
its replica had it loses the batch with it, and the promoted replica never had it. So the
routers for Sentinel and Cluster end each batch's pipeline with ``WAIT 1 <replica_timeout>`` (on
by default: ``[redis] wait_for_replica``), and settle the batch only when WAIT says a replica has
it. ``Replicas`` is the policy for one master:

- WAIT says 1: published.
- WAIT says 0: the router first asks whether the master changed (then the batch goes to the new
  one), else WAITs again, on the same connection: the batch is not sent twice.
- The master has no replica at all for REPLICA_GRACE (the replica died, or the failover left the
  new master without one): batches count as published without a replica, and no WAIT is sent
  until one is back (ROLE is checked every REPLICA_CHECK meanwhile), since a master without a
  replica has nothing to fail over to. Logged as ``notifier_no_replica`` and
  ``notifier_replica_back``. A replica that stays behind for REPLICA_GRACE is not waited for
  either (``notifier_replica_behind``).

Notifier thread only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from notifier.link import Link, command
from notifier.logs import Logger

REPLICA_GRACE = 5.0  # seconds without any replica (or behind) before a batch counts anyway
REPLICA_CHECK = 1.0  # seconds between ROLE checks for a replica, while there is none
WAIT_CHECK = b"WAIT", b"1"
# Router.execute: (link, commands, replies, events) -> the replies.
Executor = Callable[[Link, bytes, int, int], Awaitable[list[object]]]


class Replicas:
    """What one master's replicas are known to be doing."""

    def __init__(self, where: str, timeout: float, log: Logger) -> None:
        self.where = where
        self.log = log
        self.wait = command(*WAIT_CHECK, b"%d" % int(timeout * 1000))
        self._none_since: float | None = None
        self.degraded = False  # none for REPLICA_GRACE: batches go without WAIT
        self._checked_at = -REPLICA_CHECK

    async def missing(self, execute: Executor, link: Link) -> bool:
        """Whether the master has had no replica for REPLICA_GRACE: then there is nothing to
        wait for. ROLE is asked at most once every REPLICA_CHECK."""
        now = time.monotonic()
        if now - self._checked_at < REPLICA_CHECK:
            return self.degraded
        self._checked_at = now
        (role,) = await execute(link, command(b"ROLE"), 1, 0)
        if not (isinstance(role, list) and len(role) > 2 and role[0] == b"master"):
            return False  # a demoted master: WAIT fails there, and the router moves on
        replicas = role[2]
        if replicas:
            if self.degraded:
                self.log.info("notifier_replica_back", master=self.where, replicas=len(replicas))
            self._none_since, self.degraded = None, False
        elif self._none_since is None:
            self._none_since = now
        elif not self.degraded and now - self._none_since >= REPLICA_GRACE:
            self.degraded = True
            self.log.warning("notifier_no_replica", master=self.where, waited=REPLICA_GRACE)
        return self.degraded

    def recheck(self) -> None:
        """Ask ROLE at the next ``missing``: WAIT just said 0."""
        self._checked_at = -REPLICA_CHECK

    def behind(self, since: float) -> bool:
        """Whether a replica has kept a batch waiting for REPLICA_GRACE (logged)."""
        if time.monotonic() - since < REPLICA_GRACE:
            return False
        self.log.warning("notifier_replica_behind", master=self.where)
        return True


def acked(reply: object) -> bool:
    return isinstance(reply, int) and reply >= 1
