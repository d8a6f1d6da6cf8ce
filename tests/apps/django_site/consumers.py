"""A Channels consumer joined to the group its URL names; it relays each ``relay`` message's
``n`` as a text frame. The first frame is its own channel name (for ``notifier.channels.send``).
One class per channel layer alias."""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


class Relay(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        self.group = self.scope["url_route"]["kwargs"]["group"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(text_data=json.dumps({"channel": self.channel_name}))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def relay(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"n": event["n"]}))


class CoreRelay(Relay):
    channel_layer_alias = "default"  # channels_redis.core.RedisChannelLayer


class PubSubRelay(Relay):
    channel_layer_alias = "pubsub"  # channels_redis.pubsub.RedisPubSubChannelLayer
