"""One Redis node: one connection, every event to it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from notifier.batch import Outgoing, Packer
from notifier.config import NotifierConfig
from notifier.config.redaction import redact_url
from notifier.link import PING, Link
from notifier.topology.base import Attempt, ConnectionState, LinkFailed, Router, discard


class SingleRouter(Router):
    def __init__(self, config: NotifierConfig, state: ConnectionState, packer: Packer) -> None:
        super().__init__(config, state, packer)
        self._link: Link | None = None
        state.ledger.topology = self.status()

    async def send(self, batch: Sequence[Outgoing]) -> Attempt:
        link = self._link or await self._connect()
        if link is None:
            return Attempt(retry=list(batch))
        try:
            replies = await self.execute(link, *self.packer.pack(batch), len(batch))
        except LinkFailed as exc:
            await self._lost(str(exc))
            return Attempt(retry=list(batch))
        return self.settle(batch, replies)

    async def probe(self) -> None:
        link = self._link
        if link is None:
            await self._connect()
            return
        try:
            await self.execute(link, PING, 1, 0)
        except LinkFailed as exc:
            await self._lost(str(exc))

    async def close(self) -> None:
        link, self._link = self._link, None
        self.state.ledger.connected = False
        await discard(link)

    def status(self) -> dict[str, Any]:
        return {"topology": "single", "endpoint": redact_url(self.config.redis.url)}

    async def _connect(self) -> Link | None:
        link = await self.open_link(self.config.redis.url)
        if link is not None:
            self._link = link
            self.state.connected()
        return link

    async def _lost(self, error: str) -> None:
        self.state.lost(error)
        await self.close()
