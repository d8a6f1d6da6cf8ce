"""A real Django project for the tests of notifier.django and notifier.channels: Channels
consumers joined to groups (consumers), the gateway mounted in its ASGI application (asgi), a
page that starts a Celery task (views, worker), configured from the environment (settings)."""
