"""notifier.fastapi: the lifespan that starts and drains the default notifier (and closes the
mounted gateways), and the dependency that mints a token for the caller's own task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

import notifier as default
from notifier.fastapi import lifespan, task_token
from notifier.gateway import create_app
from notifier.gateway.tokens import Access, check_token
from notifier.testing import EventCollector, RedisServer

from support.gateway import HISTORY, SECRET
from support.helpers import make_config, new_task

pytestmark = pytest.mark.timeout(30)

OWNER = "alice"


async def owns(request: Request, task_id: str) -> bool:
    """The application's check (async: the dependency awaits it): the user named by the
    ``user`` header may watch the tasks whose id starts with their name."""
    return task_id.startswith(f"{request.headers.get('user')}-")


# At module level: FastAPI reads the (string) annotation of a route from the module's globals.
TaskToken = Annotated[str, Depends(task_token(owns))]


@pytest.fixture
def app(redis_server: RedisServer) -> Iterator[FastAPI]:
    """A FastAPI app with the lifespan, the gateway under /notifications, and a token route
    (signed with the default notifier's configuration)."""
    config = make_config(redis_server.url, history=HISTORY, gateway={"secret": SECRET})
    default.configure(config)
    app = FastAPI(lifespan=lifespan)
    app.mount("/notifications", create_app(config))

    @app.get("/jobs/{task_id}/token")
    def job_token(token: TaskToken) -> str:
        return token

    try:
        yield app
    finally:
        default.shutdown(1)


def test_the_token_route_answers_a_token_for_the_callers_own_task_only(app: FastAPI) -> None:
    """task_token: the caller's own task gets a token for it, another's 403, an id no task can
    have 400."""
    task_id = f"{OWNER}-{new_task('job')}"

    async def run() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            headers = {"user": OWNER}
            own = await client.get(f"/jobs/{task_id}/token", headers=headers)
            other = await client.get("/jobs/bob-1/token", headers=headers)
            # A check that lets a workflow's channel through: the token route still refuses it.
            odd = {"user": f"workflow:{OWNER}"}
            workflow = await client.get(f"/jobs/workflow:{OWNER}-1/token", headers=odd)
            return own, other, workflow

    own, other, workflow = asyncio.run(run())
    assert (200, 403, 400) == (own.status_code, other.status_code, workflow.status_code)
    assert Access.GRANTED == check_token(own.json(), task_id, SECRET)
    assert Access.OTHER_TASK == check_token(own.json(), "bob-1", SECRET)


def test_the_lifespan_runs_the_notifier_and_the_mounted_gateway_then_drains_both(
    app: FastAPI, collector: EventCollector
) -> None:
    """Inside the lifespan the notifier runs and the mounted gateway serves with a token from
    the route; on leaving it the notifier is drained and closed, and the gateway's hub too."""
    task_id = f"{OWNER}-{new_task('job')}"
    gateway = next(
        route.app for route in app.routes if getattr(route, "path", "") == "/notifications"
    )

    async def run() -> tuple[int, str]:
        async with lifespan(app):
            running = default.get_notifier()
            assert running.stats()["thread_alive"]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                token = (await client.get(f"/jobs/{task_id}/token", headers={"user": OWNER})).json()
                assert default.publish_progress(task_id, 50)
                assert await default.aflush(10)
                last = await client.get(f"/notifications/tasks/{task_id}/last?token={token}")
            assert gateway.gateway._hub is not None  # the mounted gateway's, made at first use
            assert default.publish_completed(task_id)
        assert not running.stats()["thread_alive"]
        assert gateway.gateway._hub is None
        return last.status_code, last.text

    status, body = asyncio.run(run())
    assert 200 == status
    assert 50 == json.loads(body)["data"]["progress"]
    assert ["progress", "completed"] == [e["type"] for e in collector.wait_for(2)]
