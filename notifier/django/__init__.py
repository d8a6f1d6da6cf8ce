"""notifier.django: the notifier in a Django project, as an app for ``INSTALLED_APPS``.

- ``settings.NOTIFIER``: a dict that mirrors the TOML tables (``{"redis": {"url": ...},
  "history": {"enabled": True}}``), checked by the same code as a file, with the same messages,
  by ``manage.py check`` (its ``E001``...: ``notifier.django.checks``) and at start-up, where
  it configures the process's default notifier (``notifier.django.apps``);
- a token view (``notifier.django.urls``): ``GET <prefix>token/<task_id>`` answers
  ``{"token": ..., "events": <url>}`` to a user ``settings.NOTIFIER_CAN_WATCH`` allows;
  :func:`token_for` for code that mints tokens itself;
- the gateway inside the project's ASGI application under one origin
  (``notifier.django.asgi.with_gateway``), the browser client as the static file
  ``static/notifier/client.js``, and a page that starts a task and follows it
  (``templates/notifier/watch.html``).

Sending to Channels groups is ``notifier.channels``'s. Needs the ``django`` extra.
"""

from notifier.django.settings import gateway_prefix, notifier_config, token_for

__all__ = ["gateway_prefix", "notifier_config", "token_for"]
