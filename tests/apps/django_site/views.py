"""Starts the worker's ``site.steps`` task for a signed-in user, under a new task id, on the
queue of the test's worker (``TEST_SITE_QUEUE``)."""

from __future__ import annotations

import os
import uuid

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST


@login_required
@require_POST
def start(request: HttpRequest) -> JsonResponse:
    # Imported on first use: the worker module installs the notifier from the settings, which
    # manage.py check (which imports this URLconf) must be able to find wrong.
    from apps.django_site.worker import app

    task_id = f"page-{uuid.uuid4().hex[:10]}"
    app.send_task("site.steps", args=[5], task_id=task_id, queue=os.environ["TEST_SITE_QUEUE"])
    return JsonResponse({"task_id": task_id})
