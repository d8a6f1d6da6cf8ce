"""Redis Sentinel: every event to the master the sentinels name, and none lost in a failover.

Discovery: at every (re)connect the router asks the sentinels, in turn, for the master of the
service, connects to it and checks with ROLE that it is a master before sending anything.

Zero loss: each batch waits for a replica to have it before it counts as published
(``replicas``): a WAIT of 0 makes the router ask the sentinels first, and
a batch the sentinels' new master does not have goes to it, since the old master may lose it.

A failover is noticed from whichever comes first: a ``-READONLY`` reply (the master we hold was
demoted), a WAIT of 0 with another master named, a broken connection, or Sentinel's
``+switch-master`` message, which a watcher task listens for on one sentinel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from notifier.aio import cancel_and_wait
from notifier.batch import Outgoing, Packer
from notifier.config import NotifierConfig
from notifier.config.urls import Topology
from notifier.link import TRANSPORT_ERRORS, Link, ReplyError, command
from notifier.topology.base import Attempt, ConnectionState, LinkFailed, Router, discard
from notifier.topology.replicas import Replicas, acked

WATCH_RETRY = 1.0  # seconds between the watcher's attempts to reach a sentinel


class SentinelRouter(Router):
    def __init__(
        self, config: NotifierConfig, state: ConnectionState, packer: Packer, topology: Topology
    ) -> None:
        super().__init__(config, state, packer)
        self.topology = topology
        self.failovers = 0
        self._link: Link | None = None
        self._master: tuple[str, int] | None = None
        self._switched_to: tuple[str, int] | None = None  # named by +switch-master
        self._watcher: asyncio.Task[None] | None = None
        self._wait = config.redis.wait_for_replica
        self._replicas: Replicas | None = None  # of the master we hold
        self._publish()

    async def send(self, batch: Sequence[Outgoing]) -> Attempt:
        switched, self._switched_to = self._switched_to, None
        if switched is not None and switched != self._master and self._link is not None:
            await self._drop("Sentinel switched the master (+switch-master)")
        link = self._link or await self._connect()
        if link is None or self._replicas is None:
            return Attempt(retry=list(batch))
        try:
            wait = self._wait and not await self._replicas.missing(self.execute, link)
            commands, count = self.packer.pack(batch)
            replies = await self.execute(
                link, commands + self._replicas.wait if wait else commands, count + wait, len(batch)
            )
        except LinkFailed as exc:
            await self._drop(str(exc))
            return Attempt(retry=list(batch))
        if any(isinstance(r, ReplyError) and str(r).startswith("READONLY") for r in replies):
            await self._drop("the master became a replica (READONLY)")
            return Attempt(retry=list(batch))
        if wait and not await self._confirmed(link, self._replicas, replies.pop()):
            return Attempt(retry=list(batch))
        return self.settle(batch, replies)

    async def _confirmed(self, link: Link, replicas: Replicas, reply: object) -> bool:
        """Whether a replica has the batch (WAIT's reply), or the master has none to give it
        to; False when it must be sent again, to the master the sentinels name now."""
        since = time.monotonic()
        while not acked(reply) and not replicas.behind(since):
            named = await self._discover()
            if named is not None and named != self._master:
                await self._drop(f"Sentinel names another master, {named[0]}:{named[1]}")
                return False
            replicas.recheck()
            try:
                if await replicas.missing(self.execute, link):
                    return True
                (reply,) = await self.execute(link, replicas.wait, 1, 0)
            except LinkFailed as exc:
                await self._drop(str(exc))
                return False
        return True

    async def probe(self) -> None:
        if self._link is None:
            await self._connect()
            return
        try:
            (role,) = await self.execute(self._link, command(b"ROLE"), 1, 0)
        except LinkFailed as exc:
            await self._drop(str(exc))
            return
        if not _is_master(role):
            await self._drop("the master became a replica (ROLE)")

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        await cancel_and_wait(watcher)
        link, self._link = self._link, None
        self.state.ledger.connected = False
        await discard(link)

    def _where(self) -> str | None:
        return None if self._master is None else f"{self._master[0]}:{self._master[1]}"

    def status(self) -> dict[str, Any]:
        master = self._where()
        return {
            "topology": "sentinel",
            "service": self.topology.service,
            "master": master,
            "failovers": self.failovers,
        }

    # Connecting ------------------------------------------------------------------------------

    async def _connect(self) -> Link | None:
        """Ask the sentinels for the master, connect, and check that it is one."""
        self._start_watcher()
        named = await self._discover()
        if named is None:
            self.state.connect_failed(f"no sentinel named a master for {self.topology.service!r}")
            return None
        link = await self.open_link(self.topology.node_url(*named))
        if link is None:
            return None
        try:
            (role,) = await self.execute(link, command(b"ROLE"), 1, 0)
        except LinkFailed as exc:
            await discard(link)
            self.state.connect_failed(str(exc))
            return None
        if not _is_master(role):
            await discard(link)
            self.state.connect_failed(f"{named[0]}:{named[1]} is not a master (ROLE)")
            return None
        if self._master is not None and named != self._master:
            self.failovers += 1
            self.log.info(
                "notifier_master_changed",
                old=f"{self._master[0]}:{self._master[1]}",
                new=f"{named[0]}:{named[1]}",
                failovers=self.failovers,
            )
        self._link, self._master = link, named
        self._replicas = Replicas(self._where() or "", self.config.redis.replica_timeout, self.log)
        self._publish()
        self.state.connected(master=f"{named[0]}:{named[1]}")
        return link

    async def _discover(self) -> tuple[str, int] | None:
        """The master the first sentinel that answers names; None when none does."""
        return await discover_master(self.topology, self.config.redis.connect_timeout)

    async def _drop(self, error: str) -> None:
        """Give up the master's connection, and find the master again at once: the notifier
        counts as disconnected only when no sentinel names a master it can reach."""
        link, self._link = self._link, None
        await discard(link)
        self.state.lost(error, still_connected=True)
        await self._connect()

    def _publish(self) -> None:
        self.state.ledger.topology = self.status()

    # The +switch-master watcher --------------------------------------------------------------

    def _start_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Listen for +switch-master on one sentinel after another; never ends by itself."""
        while True:
            for host, port in self.topology.hosts:
                link = await _sentinel_link(self.topology, host, port, self.config)
                if link is None:
                    continue
                try:
                    await link.send(command(b"SUBSCRIBE", b"+switch-master"))
                    while True:
                        for reply in await link.replies():
                            self._switch(reply)
                except TRANSPORT_ERRORS:
                    pass  # that sentinel went away: the next one
                finally:
                    await discard(link)
            await asyncio.sleep(WATCH_RETRY)

    def _switch(self, reply: object) -> None:
        if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"):
            return
        fields = reply[2].decode("utf-8", "replace").split() if isinstance(reply[2], bytes) else []
        if len(fields) == 5 and fields[0] == self.topology.service and fields[4].isdigit():
            self._switched_to = (fields[3], int(fields[4]))
            self.log.info("notifier_sentinel_switch", master=f"{fields[3]}:{fields[4]}")


async def discover_master(topology: Topology, timeout: float) -> tuple[str, int] | None:
    """``(host, port)`` of the master the first answering sentinel names, or None."""
    for host, port in topology.hosts:
        link = await _sentinel_link(topology, host, port, None, timeout)
        if link is None:
            continue
        try:
            async with asyncio.timeout(timeout):
                (named,) = await link.execute(
                    command(b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", topology.service.encode()),
                    1,
                )
        except (TimeoutError, *TRANSPORT_ERRORS):
            continue
        finally:
            await discard(link)
        if isinstance(named, list) and len(named) == 2 and bytes(named[1]).isdigit():
            return bytes(named[0]).decode(), int(named[1])
    return None


async def _sentinel_link(
    topology: Topology,
    host: str,
    port: int,
    config: NotifierConfig | None,
    timeout: float | None = None,
) -> Link | None:
    wait = timeout if timeout is not None else (config.redis.connect_timeout if config else 2.0)
    try:
        async with asyncio.timeout(wait):
            return await Link.open(topology.sentinel_url(host, port), wait)
    except (TimeoutError, *TRANSPORT_ERRORS, ValueError, TypeError):
        return None


def _is_master(role: object) -> bool:
    return isinstance(role, list) and bool(role) and role[0] == b"master"
