"""A message for a channel layer, as the notifier thread sends it (``notifier.dispatch``).

The layer is the alias's own class and configuration from ``CHANNEL_LAYERS``, built by Channels'
own ``channel_layers.make_backend``: one instance per alias per notifier thread, bound to its
loop, closed when the thread ends. The wire format stays the layer's. What its errors mean:
Redis unreachable, timing out or loading is transport trouble, sent again after a backoff as
events are; ``ChannelFull`` drops the message as ``channel_full``; anything else as
``layer_error``. Runs on the notifier thread only.
"""

from __future__ import annotations

from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import channel_layers
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from notifier.config.redaction import describe, url_secrets
from notifier.dispatch import Dispatch, Drop, Resources, Retry

CHANNEL_FULL = "channel_full"
LAYER_ERROR = "layer_error"
# Redis gone, slow, starting up, or a replica after a failover: worth sending again.
TRANSPORT = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    OSError,
    TimeoutError,
)


class LayerMessage(Dispatch):
    """One ``group_send`` (``group``) or ``send`` of a msgpack-encoded message, by alias."""

    __slots__ = ("alias", "group", "name", "packed")

    def __init__(self, alias: str, group: bool, name: str, packed: bytes) -> None:
        self.alias, self.group, self.name, self.packed = alias, group, name, packed

    async def send(self, resources: Resources) -> None:
        try:
            layer = resources.get(("channel_layer", self.alias), self._make, close_layer)
        except Exception as exc:
            raise Drop(LAYER_ERROR, f"channel layer {self.alias!r}: {describe(exc, ())}") from None
        message = msgpack.unpackb(self.packed)
        try:
            if self.group:
                await layer.group_send(self.name, message)
            else:
                await layer.send(self.name, message)
        except ChannelFull:
            raise Drop(CHANNEL_FULL, f"channel {self.name!r} is full") from None
        except TRANSPORT as exc:
            raise Retry(describe(exc, secrets_of(layer))) from None
        except Exception as exc:
            where = f"group {self.name!r}" if self.group else f"channel {self.name!r}"
            raise Drop(LAYER_ERROR, f"{where}: {describe(exc, secrets_of(layer))}") from None

    def _make(self) -> Any:
        return channel_layers.make_backend(self.alias)


async def close_layer(layer: Any) -> None:
    """Close the connections of a layer this thread made, on its loop."""
    kind = type(layer)  # the class, not the instance: the pub/sub layer answers any attribute
    if hasattr(kind, "close_pools"):  # channels_redis.core; its flush() would delete its keys
        await layer.close_pools()
    elif f"{kind.__module__}.{kind.__name__}" == "channels_redis.pubsub.RedisPubSubChannelLayer":
        await layer.flush()  # holds no data: its flush closes the connections
    elif hasattr(kind, "close"):
        await layer.close()


def secrets_of(layer: Any) -> tuple[str, ...]:
    """The passwords in a channels_redis layer's hosts, kept out of what is logged."""
    own = vars(layer)  # not getattr: the pub/sub layer makes a loop layer for a missing name
    found: list[str] = []
    for host in own.get("hosts") or own.get("_kwargs", {}).get("hosts") or ():
        if isinstance(host, str):
            found += url_secrets(host)
        elif isinstance(host, dict):
            if isinstance(host.get("address"), str):
                found += url_secrets(host["address"])
            if isinstance(host.get("password"), str):
                found.append(host["password"])
    return tuple(found)
