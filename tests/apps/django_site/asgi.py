"""The test site's ASGI application: Django (with its static files) and the consumers, behind
Channels' ProtocolTypeRouter, with the gateway mounted at /notifications."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.django_site.settings")

from django.core.asgi import get_asgi_application  # noqa: E402 - after the settings module

django_app = get_asgi_application()  # sets Django up before the consumers are imported

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from notifier.django.asgi import with_gateway  # noqa: E402

from apps.django_site.consumers import CoreRelay, PubSubRelay  # noqa: E402

application = with_gateway(
    ProtocolTypeRouter(
        {
            "http": ASGIStaticFilesHandler(django_app),
            "websocket": URLRouter(
                [
                    path("ws/default/<str:group>", CoreRelay.as_asgi()),
                    path("ws/pubsub/<str:group>", PubSubRelay.as_asgi()),
                ]
            ),
        }
    )
)
