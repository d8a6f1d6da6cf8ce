"""What the notifier thread asks of a topology: send this batch, and say how it went.

A *router* answers "which connection does this event go to" and sends it there: one node, the
master Sentinel names, or the cluster node that owns the event's slot. The sender's loop knows
none of that: it hands a batch to ``Router.send`` and gets an ``Attempt`` back, each event either
settled (published, or refused by Redis for good) or to be sent again, which the sender does
after a backoff. So delivery stays at least once whatever the topology, and the ledger's
accounting is the sender's alone.

``ConnectionState`` keeps what every router reports the same way: connected or not, reconnects,
the last error and its log lines. Used on the notifier thread only.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from notifier.batch import Outgoing, Packer
from notifier.config import NotifierConfig
from notifier.config.redaction import describe, url_secrets
from notifier.ledger import Ledger
from notifier.link import TRANSPORT_ERRORS, Link
from notifier.logs import Logger


class LinkFailed(Exception):
    """A connection broke or timed out; the message says how (scrubbed of secrets)."""


@dataclass
class Attempt:
    """How one send went: ``settled`` events with whether Redis refused them for good, and the
    events to send again (their connection broke, timed out, or the topology moved)."""

    settled: list[tuple[Outgoing, bool]] = field(default_factory=list)
    retry: list[Outgoing] = field(default_factory=list)


class ConnectionState:
    """Connection state as the ledger, the health endpoint and the log show it."""

    def __init__(self, config: NotifierConfig, ledger: Ledger, log: Logger) -> None:
        self.config = config
        self.ledger = ledger
        self.log = log
        self.secrets = url_secrets(config.redis.url)
        self._outage_since: float | None = None
        self._failed_connects = 0
        self._was_connected = False

    def describe(self, exc: BaseException) -> str:
        return describe(exc, self.secrets)

    def connected(self, **where: Any) -> None:
        ledger = self.ledger
        if self._was_connected:
            ledger.reconnects += 1
        self._was_connected = True
        ledger.connected = True
        outage = self._outage_since
        self.log.info(
            "notifier_connected",
            reconnects=ledger.reconnects,
            outage_seconds=None if outage is None else round(time.monotonic() - outage, 3),
            **where,
        )
        self._outage_since = None
        self._failed_connects = 0

    def connect_failed(self, error: str) -> None:
        self.ledger.note_error(error)
        self.ledger.connected = False
        self._failed_connects += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        # The first failure of an outage is a warning; repeating it every backoff would flood.
        emit = self.log.warning if self._failed_connects == 1 else self.log.debug
        emit("notifier_connect_failed", error=error, attempts=self._failed_connects)

    def lost(self, error: str, *, still_connected: bool = False) -> None:
        """A connection broke. ``still_connected``: another one carries on (a cluster's other
        nodes), so the notifier as a whole is not disconnected."""
        self.ledger.connected = still_connected
        self.ledger.note_error(error)
        if not still_connected and self._outage_since is None:
            self._outage_since = time.monotonic()
        self.log.warning("notifier_disconnected", error=error)


class Router(abc.ABC):
    """Sends batches to the right connections; one per notifier thread."""

    def __init__(self, config: NotifierConfig, state: ConnectionState, packer: Packer) -> None:
        self.config = config
        self.state = state
        self.packer = packer
        self.log = state.log

    @abc.abstractmethod
    async def send(self, batch: Sequence[Outgoing]) -> Attempt:
        """Send the batch once; never raises for transport reasons."""

    @abc.abstractmethod
    async def probe(self) -> None:
        """Nothing to send for a while: check that the connections still answer (or make
        them), so that ``connected`` follows Redis while idle too."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection at once."""

    def status(self) -> dict[str, Any]:
        """What the topology looks like now, for stats(), the health body and /metrics."""
        return {}

    # Helpers for the routers -----------------------------------------------------------------

    async def open_link(self, url: str, **where: Any) -> Link | None:
        """A connected link to ``url`` (checked with PING), or None after logging why not."""
        timeout = self.config.redis.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                return await Link.open(url, timeout)
        except TimeoutError:
            self.state.connect_failed(f"connect timed out after {timeout}s")
        except Exception as exc:  # noqa: BLE001 - anything that stops a connect is a failed one
            # Transport errors, and what stops a connection from even being tried (an option
            # redis-py refuses): retried with backoff; the notifier thread must never die of it.
            self.state.connect_failed(self.state.describe(exc))
        return None

    async def execute(self, link: Link, commands: bytes, replies: int, events: int) -> list[object]:
        """The replies to ``commands`` on ``link``. LinkFailed (logged) when the link failed or
        timed out: it must be given up then, since a reply may still be in flight, and reading
        it later would hand it to the wrong command (CVE-2023-28859)."""
        timeout = self.config.redis.publish_timeout
        try:
            async with asyncio.timeout(timeout):
                return await link.execute(commands, replies)
        except TimeoutError:
            if events:
                self.log.warning("notification_publish_timeout", events=events, timeout=timeout)
            raise LinkFailed("publish timed out" if events else "PING timed out") from None
        except TRANSPORT_ERRORS as exc:
            error = self.state.describe(exc)
            if events:
                self.log.warning("notification_publish_failed", events=events, error=error)
            raise LinkFailed(error) from None

    def settle(self, batch: Sequence[Outgoing], replies: Sequence[object]) -> Attempt:
        """An Attempt with every event settled by its replies; failed commands are logged.
        History writes that failed do not make the live event undelivered. A workflow step
        whose script the node did not have is sent again (with the script)."""
        outcome = self.packer.read(batch, replies)
        for name, errors in (
            ("notification_publish_failed", outcome.publish_errors),
            ("notification_history_failed", outcome.history_errors),
        ):
            if errors:
                self.log.error(name, commands=len(errors), error=self.state.describe(errors[0]))
        if outcome.again is None:
            return Attempt(settled=list(zip(batch, outcome.failed, strict=True)))
        attempt = Attempt()
        for event, failed, again in zip(batch, outcome.failed, outcome.again, strict=True):
            if again:
                attempt.retry.append(event)
            else:
                attempt.settled.append((event, failed))
        return attempt


async def discard(link: Link | None) -> None:
    if link is not None:
        with contextlib.suppress(*TRANSPORT_ERRORS):  # abandoned either way
            await link.close()
