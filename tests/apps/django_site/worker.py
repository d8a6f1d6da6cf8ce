"""The test site's Celery app: Django set up first, the notifier installed from
``settings.NOTIFIER``. ``site.burst`` sends to a Channels group from its ``except`` block (the
task raised, as a failing task's handler would); ``site.steps`` reports progress for the page."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.django_site.settings")

import django  # noqa: E402

django.setup()

import notifier  # noqa: E402
import notifier.celery  # noqa: E402
from notifier import channels  # noqa: E402
from notifier.django import notifier_config  # noqa: E402

from apps.celery_apps import celery_test_app  # noqa: E402

app = celery_test_app("django_site")
notifier.celery.install(app, notifier_config())


@app.task(name="site.burst")
def burst(group: str, alias: str, first: int, count: int) -> int:
    accepted = 0
    try:
        raise ConnectionError("the payment service did not answer")
    except ConnectionError:
        for n in range(first, first + count):
            accepted += channels.group_send(group, {"type": "relay", "n": n}, layer=alias)
    return accepted


@app.task(name="site.steps", bind=True)
def steps(self: Any, count: int) -> dict[str, Any]:
    for step in range(1, count + 1):
        notifier.publish_progress(self.request.id, 100 * step / count, message=f"step {step}")
    return {"steps": count}
