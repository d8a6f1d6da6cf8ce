"""The gateway and the project's ASGI application under one origin.

``with_gateway(application)`` routes ``<prefix>/...`` (HTTP and WebSocket) to the gateway
(``notifier.gateway.create_app``, configured from ``settings.NOTIFIER``) and everything else to
``application``: Django's own ASGI handler, or Channels' ``ProtocolTypeRouter`` around it.
``<prefix>/token/...`` stays Django's: the token view (``notifier.django.urls``, included at the
same prefix) answers there. The
lifespan is answered here, so neither Django nor Channels is asked for it: it starts the
default notifier, and when the server stops it closes the gateway's Redis connections and
drains the notifier without blocking the loop (``notifier.gateway.lifespan``). A mistake in
``settings.NOTIFIER`` raises ConfigError here, at the server's start.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from notifier.config import NotifierConfig
from notifier.django.settings import gateway_prefix, notifier_config
from notifier.gateway import create_app
from notifier.gateway.lifespan import lifespan


def with_gateway(
    application: ASGIApp | Any, *, prefix: str | None = None, config: NotifierConfig | None = None
) -> ASGIApp:
    """``application`` with the gateway mounted at ``prefix`` (default:
    ``settings.NOTIFIER_GATEWAY_PREFIX``, ``/notifications``)."""
    prefix = gateway_prefix() if prefix is None else prefix.rstrip("/")
    gateway = create_app(notifier_config() if config is None else config)
    return Starlette(
        routes=[
            Route(f"{prefix}/token/{{rest:path}}", application),  # the token view, Django's
            Mount(prefix, app=gateway),
            Mount("", app=application),
        ],
        lifespan=lifespan,
    )
