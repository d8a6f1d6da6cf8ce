"""Per-task access tokens: a JWT (HS256, PyJWT) that names one task id and expires.

The backend issues one when it enqueues a task and hands it to the browser with the task id;
the gateway reads any of that task's routes only with it. JWT because it is a standard that a
backend in another language can issue with the same secret; PyJWT checks the signature, the
expiry and the audience, so none of that is code of ours. Claims: ``sub`` (the task id), ``aud``
(``notifier-gateway``, so that a token minted for something else with the same secret is
refused), ``iat`` and ``exp``. A workflow's token names its channel id, ``workflow:<id>``, so it
reads that workflow's routes and no task's.
"""

from __future__ import annotations

import time
from enum import Enum

import jwt

from notifier.config import NotifierConfig
from notifier.events import check_task_id
from notifier.exceptions import NotifierError
from notifier.workflows import ids as workflows

AUDIENCE = "notifier-gateway"
ALGORITHM = "HS256"


class Access(Enum):
    """What a request's token says about one task."""

    GRANTED = "granted"
    MISSING = "missing"  # no token at all: 401
    INVALID = "invalid"  # garbled, forged, expired or for another audience: 401
    OTHER_TASK = "other task"  # a valid token for another task: 403


def issue_token(
    task_id: str, *, config: NotifierConfig, ttl: float = 3600, workflow: bool = False
) -> str:
    """A token for ``task_id`` (a workflow id, with ``workflow``) that expires in ``ttl``
    seconds, signed with ``[gateway] secret`` (or ``$NOTIFIER_GATEWAY_SECRET``). Raises
    NotifierError when no secret is configured."""
    secret = config.gateway.secret
    if not secret:
        raise NotifierError(
            "no gateway secret: set [gateway] secret or $NOTIFIER_GATEWAY_SECRET to issue tokens"
        )
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    now = int(time.time())
    subject = workflows.channel_id(task_id) if workflow else check_task_id(task_id)
    claims = {"sub": subject, "aud": AUDIENCE, "iat": now, "exp": now + int(ttl)}
    token: str = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return token


def check_token(token: str | None, task_id: str, secret: str) -> Access:
    """Whether ``token`` grants reading ``task_id``."""
    if not token:
        return Access.MISSING
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["sub", "aud", "exp"]},
        )
    except jwt.InvalidTokenError:  # expired, bad signature, malformed, wrong audience
        return Access.INVALID
    return Access.GRANTED if claims.get("sub") == task_id else Access.OTHER_TASK
