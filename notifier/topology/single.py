"""One Redis node: one connection, every event to it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from notifier.batch import Event, Packer
from notifier.config import NotifierConfig
from notifier.link import PING, Link
from notifier.redaction import redact_url
from notifier.topology.base import Attempt, LinkFailed, Links, Router, discard


class SingleRouter(Router):
    def __init__(self, config: NotifierConfig, links: Links, packer: Packer) -> None:
        super().__init__(config, links, packer)
        self._link: Link | None = None
        links.ledger.topology = self.status()

    async def send(self, batch: Sequence[Event]) -> Attempt:
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
        self.links.ledger.connected = False
        await discard(link)

    def status(self) -> dict[str, Any]:
        return {"topology": "single", "endpoint": redact_url(self.config.redis.url)}

    async def _connect(self) -> Link | None:
        link = await self.open_link(self.config.redis.url)
        if link is not None:
            self._link = link
            self.links.connected()
        return link

    async def _lost(self, error: str) -> None:
        self.links.lost(error)
        await self.close()
