"""notifier.channels: send to a Django Channels group or channel from anywhere, without
``async_to_sync``.

``group_send(group, message)`` and ``send(channel, message)`` have ``publish``'s contract: any
thread, a Celery task's ``except`` block, code inside any running event loop; they never block
and never raise for transport reasons; True when accepted, False when dropped; every message
counted in ``stats()`` (published, or dropped by reason), drained at ``flush()`` and at shutdown,
and fork-safe. The message goes through the project's own channel layer (``CHANNEL_LAYERS``'
``BACKEND`` and ``CONFIG`` for the alias): one instance per alias, made on the notifier thread and
living on its loop (``notifier.channels.layers``), never the one the application's own threads
use. Bad input (a name Channels refuses, a message that is not a dict with a str ``type``, or
that msgpack cannot encode) raises InvalidEvent at the call site. Needs the ``django`` extra.
"""

from __future__ import annotations

from typing import Any

import msgpack
from channels.layers import BaseChannelLayer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from notifier.channels.layers import LayerMessage
from notifier.default import get_notifier
from notifier.exceptions import ConfigError, InvalidEvent
from notifier.publisher import Notifier

DEFAULT_LAYER = "default"  # channels.DEFAULT_CHANNEL_LAYER
# Channels' own rules for names (its regular expressions and length), from its base class.
_names = BaseChannelLayer()
_checked: dict[str, object] = {}  # alias -> the CHANNEL_LAYERS entry checked for it

__all__ = ["group_send", "send"]


def group_send(
    group: str,
    message: dict[str, Any],
    *,
    layer: str = DEFAULT_LAYER,
    notifier: Notifier | None = None,
) -> bool:
    """Queue ``message`` for every channel in ``group``, through the ``layer`` alias's channel
    layer (``layer.group_send``). ``notifier``: the process's default one when None."""
    try:
        _names.require_valid_group_name(group)
    except TypeError as exc:
        raise InvalidEvent(f"group {group!r}: {exc}") from None
    return _queue(True, group, message, layer, notifier)


def send(
    channel: str,
    message: dict[str, Any],
    *,
    layer: str = DEFAULT_LAYER,
    notifier: Notifier | None = None,
) -> bool:
    """Queue ``message`` for one channel (a consumer's ``channel_name``), through the ``layer``
    alias's channel layer (``layer.send``). ``notifier``: the process's default one when None."""
    try:
        _names.require_valid_channel_name(channel)
    except TypeError as exc:
        raise InvalidEvent(f"channel {channel!r}: {exc}") from None
    return _queue(False, channel, message, layer, notifier)


def _queue(
    group: bool, name: str, message: dict[str, Any], alias: str, notifier: Notifier | None
) -> bool:
    """Check the message and the alias, copy the message as bytes, and hand it over."""
    if not isinstance(message, dict):
        raise InvalidEvent(f"a channel layer message is a dict, got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise InvalidEvent(f"a channel layer message needs a str 'type', got {kind!r}")
    if "__asgi_channel__" in message:
        raise InvalidEvent("'__asgi_channel__' is the channel layer's own key in a message")
    _check_alias(alias)
    target = get_notifier() if notifier is None else notifier
    try:
        # The bytes are the caller's copy: what the caller changes afterwards is not sent.
        packed: bytes = msgpack.packb(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEvent(f"a channel layer message must be msgpack-serialisable: {exc}") from None
    limit = target.config.queue.max_event_bytes
    if len(packed) > limit:
        raise InvalidEvent(
            f"a channel layer message of {len(packed)} bytes is over queue.max_event_bytes "
            f"({limit})"
        )
    return target.integration.dispatch(name, LayerMessage(alias, group, name, packed))


def _check_alias(alias: str) -> None:
    """The alias names a layer whose backend imports. Checked once per alias and settings."""
    try:
        layers = getattr(settings, "CHANNEL_LAYERS", None)
    except ImproperlyConfigured as exc:
        raise ConfigError(f"notifier.channels needs Django's settings: {exc}") from None
    entry = layers.get(alias) if isinstance(layers, dict) else None
    if entry is not None and _checked.get(alias) is entry:
        return
    key = f"CHANNEL_LAYERS[{alias!r}]"
    if not isinstance(entry, dict):
        known = ", ".join(map(repr, layers or ())) or "none"
        raise ConfigError(
            f"settings.CHANNEL_LAYERS has no layer {alias!r} (layers: {known})", key=key
        )
    # Imported here, on the caller's thread, not first on the notifier thread: a fork while
    # that thread imports the backend would leave the child a half-imported module for good.
    try:
        import_string(entry.get("BACKEND", ""))
    except ImportError as exc:
        raise ConfigError(f"settings.{key}['BACKEND'] does not import: {exc}", key=key) from None
    _checked[alias] = entry
