"""Per-task access tokens: a JWT (HS256, PyJWT) that names one task id and expires.

The backend issues one when it enqueues a task and hands it to the browser with the task id;
the gateway reads any of that task's routes only with it. JWT because it is a standard that a
backend in another language can issue with the same secret; PyJWT checks the signature, the
expiry and the audience, so none of that is code of ours. Claims: ``sub`` (the task id), ``aud``
(``notifier-gateway``, so that a token minted for something else with the same secret is
refused), ``iat`` and ``exp``. A workflow's token names its channel id, ``workflow:<id>``, so it
reads that workflow's routes and no task's.

A ``sub`` that starts with ``workflow:`` is therefore always a workflow's grant, and a task's token
never has one: ``issue_token`` refuses a task id of that form, and the task routes refuse it with
a 400 (``channel_id_problem``). So a task's token never reads a workflow and a workflow's token
never reads a task, whatever the ids, and without a claim beyond the four standard ones.
"""

from __future__ import annotations

import time
from enum import Enum

import jwt

from notifier.config import NotifierConfig
from notifier.events import check_task_id
from notifier.exceptions import InvalidEvent, NotifierError
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
    NotifierError when no secret is configured, InvalidEvent for an id that cannot name a task
    (or workflow), and for a task id that starts with ``workflow:``."""
    secret = config.gateway.secret
    if not secret:
        raise NotifierError(
            "no gateway secret: set [gateway] secret or $NOTIFIER_GATEWAY_SECRET to issue tokens"
        )
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    subject = workflows.channel_id(task_id) if workflow else check_task_id(task_id)
    if not workflow and subject.startswith(workflows.PREFIX):
        bare = subject[len(workflows.PREFIX) :]
        raise InvalidEvent(
            f"a task's token cannot name {subject!r}: an id that starts with "
            f"{workflows.PREFIX!r} is a workflow's channel, which a task's token never reads; "
            f"for the workflow, call issue_token({bare!r}, config=..., workflow=True)"
        )
    now = int(time.time())
    claims = {"sub": subject, "aud": AUDIENCE, "iat": now, "exp": now + int(ttl)}
    token: str = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return token


def channel_id_problem(channel_id: str, *, workflow: bool) -> str | None:
    """Why a route may not read ``channel_id`` (a task route's task id, or with ``workflow`` a
    workflow route's ``workflow:<id>``), for its 400; None if it may. A task route refuses an id
    that starts with ``workflow:``: that is a workflow's channel, and only a workflow's token may
    name it."""
    try:
        check_task_id(channel_id)
    except InvalidEvent as exc:
        return str(exc)
    if not workflow and channel_id.startswith(workflows.PREFIX):
        return (
            f"a task id must not start with {workflows.PREFIX!r}: that is a workflow's channel, "
            f"read at /workflows/<id>/ with the workflow's token"
        )
    return None


def check_token(token: str | None, task_id: str, secret: str) -> Access:
    """Whether ``token`` grants reading ``task_id`` (a channel id: a task's, or a workflow's
    ``workflow:<id>``). The route has checked the id with ``channel_id_problem`` first."""
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
