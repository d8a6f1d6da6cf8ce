"""Redis Cluster: each event to the master that owns its slot, with sharded pub/sub.

The task id is a hash tag (``notifier.naming``), so a task's channel and history
stream share one slot: an event's XADD, SPUBLISH and EXPIRE go to one node, in one pipeline. A
batch is split by the slot map (``CLUSTER SLOTS``, read from any node that answers) into one
pipeline per master, sent on one connection per master, all at once.

What comes back decides, event by event:

- the replies say done: settled (a plain error reply is a ``redis_error`` drop, as ever);
- ``MOVED``, ``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN`` (a failover, a resharding), or the node's
  connection failed: the event is sent again after the sender's backoff, to whichever master the
  refreshed slot map names then (at least once, as everywhere). A slot being migrated answers
  ASK until the migration ends, then MOVED: such an event waits for the move instead of being
  sent with ASKING.
- with ``[redis] wait_for_replica``, each node's pipeline ends with WAIT, and its events settle
  only once a replica has them (``replicas``), so that a master killed
  after it acknowledged them takes nothing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot

from notifier.batch import Outgoing, Packer
from notifier.config import NotifierConfig
from notifier.config.urls import Topology
from notifier.link import Link, ReplyError, command
from notifier.naming import Naming
from notifier.topology.base import Attempt, ConnectionState, LinkFailed, Router, discard
from notifier.topology.replicas import Replicas, acked

SLOTS = 16384
REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
Node = tuple[str, int]


class ClusterRouter(Router):
    def __init__(
        self, config: NotifierConfig, state: ConnectionState, packer: Packer, topology: Topology
    ) -> None:
        super().__init__(config, state, packer)
        self.topology = topology
        self.naming: Naming = packer.naming
        self._owner: list[Node | None] = []  # slot -> master; empty until the map is read
        self._stale = True
        self._links: dict[Node, Link] = {}
        self._replicas: dict[Node, Replicas] = {}
        self._counts: dict[Node, dict[str, int]] = defaultdict(lambda: {"sent": 0, "errors": 0})
        self.refreshes = 0  # slot map reads after a move, a failover or a lost node
        self._publish()

    async def send(self, batch: Sequence[Outgoing]) -> Attempt:
        if self._stale and not await self._refresh():
            return Attempt(retry=list(batch))
        groups: dict[Node, list[Outgoing]] = defaultdict(list)
        for event in batch:
            node = self._owner[key_slot(self.naming.key(event[0]).encode())]
            if node is None:
                self._stale = True
                return Attempt(retry=list(batch))
            groups[node].append(event)
        parts = await asyncio.gather(
            *(self._send_to(node, events) for node, events in groups.items())
        )
        attempt = Attempt()
        for part in parts:
            attempt.settled += part.settled
            attempt.retry += part.retry
        self._publish()
        return attempt

    async def _send_to(self, node: Node, events: list[Outgoing]) -> Attempt:
        link = self._links.get(node) or await self._connect(node)
        if link is None:
            self._stale = True
            return Attempt(retry=events)
        replicas = self._replicas[node]
        try:
            wait = self.config.redis.wait_for_replica and not await replicas.missing(
                self.execute, link
            )
            commands, count = self.packer.pack(events)
            if wait:
                commands += replicas.wait
            replies = await self.execute(link, commands, count + wait, len(events))
            if wait and not await self._confirmed(link, replicas, replies.pop()):
                self._stale = True  # the node is no master now: the slot map says who is
                return Attempt(retry=events)
        except LinkFailed as exc:
            await self._drop(node, str(exc))
            return Attempt(retry=events)
        counts = self._counts[node]
        redirected = self._redirected(events, replies)
        if redirected:
            self._stale = True
            counts["errors"] += len(redirected)
        done = [e for i, e in enumerate(events) if i not in redirected]
        own = self.packer.per_event(events, replies)
        kept = [r for i, r in enumerate(own) if i not in redirected]
        settled = self.settle(
            done, [r for pair in kept for r in pair] + self.packer.tail(events, replies)
        )
        counts["sent"] += sum(1 for _, failed in settled.settled if not failed)
        counts["errors"] += sum(1 for _, failed in settled.settled if failed)
        settled.retry += [events[i] for i in sorted(redirected)]
        return settled

    async def _confirmed(self, link: Link, replicas: Replicas, reply: object) -> bool:
        """Whether a replica of this master has the batch (or it has none to give it to);
        False when WAIT itself failed: the node was demoted, and the batch goes again."""
        since = time.monotonic()
        while not acked(reply) and not replicas.behind(since):
            if isinstance(reply, ReplyError):
                return False
            replicas.recheck()
            if await replicas.missing(self.execute, link):
                return True
            (reply,) = await self.execute(link, replicas.wait, 1, 0)
        return True

    def _redirected(self, events: Sequence[Outgoing], replies: Sequence[object]) -> set[int]:
        """The events one of whose commands was redirected (the slot is elsewhere, or moving),
        their task's EXPIRE included: the pack has one per task, in order of first appearance."""
        tasks = self.packer.expired(events)
        moved = {tasks[j] for j, r in enumerate(self.packer.tail(events, replies)) if _redirect(r)}
        return {
            i
            for i, own in enumerate(self.packer.per_event(events, replies))
            if events[i][0] in moved or any(_redirect(r) for r in own)
        }

    async def probe(self) -> None:
        if self._stale and not await self._refresh():
            return
        for node in {n for n in self._owner if n is not None}:
            link = self._links.get(node) or await self._connect(node)
            if link is None:
                continue
            try:
                await self.execute(link, command(b"PING"), 1, 0)
            except LinkFailed as exc:
                await self._drop(node, str(exc))

    async def close(self) -> None:
        links, self._links = self._links, {}
        self.state.ledger.connected = False
        for link in links.values():
            await discard(link)

    def status(self) -> dict[str, Any]:
        masters = sorted({n for n in self._owner if n is not None})
        return {
            "topology": "cluster",
            "masters": len(masters),
            "failovers": self.refreshes,
            "nodes": {
                f"{host}:{port}": {
                    "connected": (host, port) in self._links,
                    "published": self._counts[(host, port)]["sent"],
                    "errors": self._counts[(host, port)]["errors"],
                }
                for host, port in masters
            },
        }

    # The slot map and the connections ---------------------------------------------------------

    async def _refresh(self) -> bool:
        """Read the slot map from the first node that answers (known masters first, then the
        seeds); False when none does."""
        for node in [*dict.fromkeys([*self._links, *self.topology.hosts])]:
            link = self._links.get(node) or await self.open_link(self.topology.node_url(*node))
            if link is None:
                continue
            try:
                (slots,) = await self.execute(link, command(b"CLUSTER", b"SLOTS"), 1, 0)
            except LinkFailed:
                await discard(link)
                self._links.pop(node, None)
                continue
            if node not in self._links:
                await discard(link)  # a seed we asked; masters get their own connections
            owner = _slot_owners(slots)
            if owner is None:
                continue
            if self._owner:
                self.refreshes += 1
            self._owner, self._stale = owner, False
            await self._forget_former_masters()
            self._publish()
            return True
        self.state.connect_failed("no cluster node answered CLUSTER SLOTS")
        return False

    async def _connect(self, node: Node) -> Link | None:
        link = await self.open_link(self.topology.node_url(*node), node=f"{node[0]}:{node[1]}")
        if link is None:
            return None
        self._links[node] = link
        self._replicas.setdefault(
            node, Replicas(f"{node[0]}:{node[1]}", self.config.redis.replica_timeout, self.log)
        )
        masters = {n for n in self._owner if n is not None}
        if masters <= set(self._links):
            self.state.connected(masters=len(masters))
        self._publish()
        return link

    async def _drop(self, node: Node, error: str) -> None:
        link = self._links.pop(node, None)
        await discard(link)
        self._stale = True
        self.state.lost(f"{node[0]}:{node[1]}: {error}", still_connected=bool(self._links))
        self._publish()

    async def _forget_former_masters(self) -> None:
        """Close the connections of nodes that own no slot now (a replica promoted over them)."""
        masters = {n for n in self._owner if n is not None}
        for node in [n for n in self._links if n not in masters]:
            with contextlib.suppress(Exception):
                await discard(self._links.pop(node))

    def _publish(self) -> None:
        self.state.ledger.topology = self.status()


def _slot_owners(slots: object) -> list[Node | None] | None:
    """CLUSTER SLOTS as slot -> master; None for a reply that is not a slot map."""
    if not isinstance(slots, list) or not slots:
        return None
    owner: list[Node | None] = [None] * SLOTS
    for entry in slots:
        if not (isinstance(entry, list) and len(entry) >= 3 and isinstance(entry[2], list)):
            return None
        start, end, master = entry[0], entry[1], entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        node = (host or "127.0.0.1", int(master[1]))
        for slot in range(int(start), int(end) + 1):
            owner[slot] = node
    return owner


def _redirect(reply: object) -> bool:
    return isinstance(reply, ReplyError) and str(reply).split(" ", 1)[0] in REDIRECTS
