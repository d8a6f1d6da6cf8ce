"""The lifespan of an ASGI application that mounts the gateway beside its own routes.

A mounted application's own lifespan never runs: Starlette runs only the outer one's. So the
outer application's lifespan is where the gateways mounted in it close their Redis connections,
and where the process's default notifier, which its views publish through, is started and, when
the application stops, drained without blocking the loop. ``notifier.fastapi.lifespan`` and
``notifier.django.asgi.with_gateway`` use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Mount

from notifier import default
from notifier.gateway.app import GatewayApp


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Start the default notifier with ``app``; when ``app`` stops, close the gateways mounted
    in it and drain the notifier with ``notifier.ashutdown()``, whose deadline is
    ``shutdown.drain_timeout``."""
    default.get_notifier().start()
    try:
        yield
    finally:
        for gateway in mounted_gateways(app):
            await gateway.gateway.close()
        await default.ashutdown()


def mounted_gateways(app: Starlette) -> list[GatewayApp]:
    return [
        route.app
        for route in app.routes
        if isinstance(route, Mount) and isinstance(route.app, GatewayApp)
    ]
