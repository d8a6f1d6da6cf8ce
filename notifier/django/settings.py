"""What the Django app reads from the project's settings, and the tokens it mints from them.

``settings.NOTIFIER`` is checked by the TOML file's own code (``notifier.config.loader``), with
``settings.NOTIFIER`` named where a file's path would be. ``$NOTIFIER_REDIS_URL`` and
``$NOTIFIER_GATEWAY_SECRET`` override it, as they override a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from notifier.config import NotifierConfig
from notifier.config.loader import from_mapping
from notifier.exceptions import ConfigError
from notifier.gateway.tokens import issue_token

SOURCE = "settings.NOTIFIER"
DEFAULT_PREFIX = "/notifications"  # where with_gateway mounts the gateway, by default


def notifier_config() -> NotifierConfig:
    """The notifier's configuration from ``settings.NOTIFIER`` (absent: every default), with
    the environment's overrides. ConfigError names ``settings.NOTIFIER`` and the dotted key."""
    raw: Any = getattr(settings, "NOTIFIER", {})
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"must be a dict of tables, as the TOML file has them, got {type(raw).__name__}",
            path=SOURCE,
        )
    return from_mapping(raw, path=SOURCE).with_env()


def gateway_prefix() -> str:
    """Where the gateway is mounted: ``settings.NOTIFIER_GATEWAY_PREFIX`` (``/notifications``)."""
    prefix: str = getattr(settings, "NOTIFIER_GATEWAY_PREFIX", DEFAULT_PREFIX)
    return prefix.rstrip("/")


def token_for(
    task_id: str, *, ttl: float = 3600, config: NotifierConfig | None = None
) -> dict[str, str]:
    """A token for ``task_id`` and the URL of its events at the mounted gateway:
    ``{"token": ..., "events": ...}``. The same as the token view answers, for code that decides
    itself who may watch. InvalidEvent for an id that names no task; NotifierError without
    ``[gateway] secret``."""
    config = notifier_config() if config is None else config
    token = issue_token(task_id, config=config, ttl=ttl)
    return {"token": token, "events": f"{gateway_prefix()}/tasks/{task_id}/events"}
