"""The token view: a signed token for one task, for a user the project allows to watch it.

``settings.NOTIFIER_CAN_WATCH`` decides: a callable ``(request, task_id) -> bool`` or its dotted
path; by default, any authenticated user. A refusal is a 403, an id that names no task a 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from notifier.django.settings import token_for
from notifier.exceptions import InvalidEvent, NotifierError

CanWatch = Callable[[HttpRequest, str], bool]


def authenticated(request: HttpRequest, task_id: str) -> bool:
    """The default rule: any signed-in user may watch any task."""
    user: Any = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)


def can_watch() -> CanWatch:
    rule: CanWatch | str = getattr(settings, "NOTIFIER_CAN_WATCH", authenticated)
    if isinstance(rule, str):
        found: CanWatch = import_string(rule)
        return found
    return rule


@never_cache
@require_GET
def token(request: HttpRequest, task_id: str) -> JsonResponse:
    if not can_watch()(request, task_id):
        return JsonResponse({"error": "not allowed to watch this task"}, status=403)
    try:
        return JsonResponse(token_for(task_id))
    except InvalidEvent as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    except NotifierError as exc:  # no gateway secret: the project's mistake, said plainly
        return JsonResponse({"error": str(exc)}, status=503)
