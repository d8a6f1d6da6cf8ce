"""``manage.py check`` for ``settings.NOTIFIER``: the configuration file's own messages.

Their ids are ``notifier``'s own (``manage.py check`` shows ``E001`` under ``notifier``):

- ``E001``: ``settings.NOTIFIER`` is wrong (a mistyped table or key, with the nearest
  right name; a bad value), in the words a TOML file's mistake gets;
- ``E002``: no ``redis`` table (nor ``$NOTIFIER_REDIS_URL``): the notifier would publish
  to ``redis://127.0.0.1:6379/0``, which in a Django project is rarely the Redis meant;
- ``W001``: no ``gateway`` secret, so the token view and the mounted gateway refuse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from notifier.config import ENV_GATEWAY_SECRET, ENV_REDIS_URL
from notifier.django.settings import SOURCE, notifier_config
from notifier.exceptions import ConfigError


@register("notifier")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        config = notifier_config()
    except ConfigError as exc:
        return [Error(exc.reason, obj=SOURCE, id="notifier.E001")]
    raw: Mapping[str, Any] = getattr(settings, "NOTIFIER", {})
    found: list[CheckMessage] = []
    if "redis" not in raw and not os.environ.get(ENV_REDIS_URL):
        found.append(
            Error(
                'no "redis" table: the notifier would publish to redis://127.0.0.1:6379/0',
                hint=f'set {SOURCE}["redis"] = {{"url": "redis://..."}} (or ${ENV_REDIS_URL})',
                obj=SOURCE,
                id="notifier.E002",
            )
        )
    if not config.gateway.secret:
        found.append(
            Warning(
                "no gateway secret: the token view and the mounted gateway refuse every browser",
                hint=f'set {SOURCE}["gateway"] = {{"secret": ...}} (or ${ENV_GATEWAY_SECRET})',
                obj=SOURCE,
                id="notifier.W001",
            )
        )
    return found
