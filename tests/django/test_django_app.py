"""notifier.django without a server: settings.NOTIFIER checked by the TOML file's own code and
reported by Django's system checks (manage.py check in a process of its own, too), and the token
view's rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

import notifier
from notifier.testing import RedisServer

from support.django_site import run_in_site, setup_here, site_env

pytestmark = pytest.mark.timeout(60)
SECRET = "test-gateway-secret-0123456789abcdef"
REDIS = {"url": "redis://127.0.0.1:6390/0"}


@pytest.fixture(scope="module")
def here(redis_server: RedisServer) -> Iterator[None]:
    setup_here(redis_server.url)
    yield
    notifier.configure(None)


def notifier_checks(setting: dict[str, Any]) -> list[Any]:
    from django.core import checks
    from django.test import override_settings

    with override_settings(NOTIFIER=setting):
        return list(checks.run_checks(tags=["notifier"]))


def test_a_mistyped_table_gets_the_files_message_and_the_nearest_name(here: None) -> None:
    """NOTIFIER["histroy"] is notifier.E001 with the TOML file's words: did you mean [history]?"""
    [found] = notifier_checks({"redis": REDIS, "histroy": {"enabled": True}})
    assert "notifier.E001" == found.id
    assert "[histroy] is not a notifier table; did you mean [history]?" in found.msg


def test_a_bad_value_names_its_dotted_key(here: None) -> None:
    """A value out of range is notifier.E001 naming queue.maxsize and what it must be."""
    [found] = notifier_checks({"redis": REDIS, "queue": {"maxsize": -5}})
    assert ("notifier.E001", "queue.maxsize must be a positive integer, got -5") == (
        found.id,
        found.msg,
    )


def test_a_missing_table_is_reported(here: None) -> None:
    """No redis table: notifier.E002; no gateway secret: the warning notifier.W001."""
    found = notifier_checks({"history": {"enabled": True}})
    assert ["notifier.E002", "notifier.W001"] == [m.id for m in found]
    assert [] == [m.id for m in notifier_checks({"redis": REDIS, "gateway": {"secret": SECRET}})]


def test_manage_py_check_prints_the_mistake_and_fails(redis_server: RedisServer) -> None:
    """manage.py check, in a process of its own, fails on NOTIFIER["histroy"] and says why."""
    env = site_env(redis_server.url, TEST_NOTIFIER=json.dumps({"redis": REDIS, "histroy": {}}))
    with pytest.raises(RuntimeError) as failed:
        run_in_site(env, "from django.core.management import call_command\ncall_command('check')")
    assert (
        "settings.NOTIFIER: (notifier.E001) [histroy] is not a notifier table; did you mean "
        "[history]?" in str(failed.value)
    )


def test_the_token_view_answers_whom_the_projects_rule_allows(here: None) -> None:
    """NOTIFIER_CAN_WATCH decides: allowed, a signed token for that task and its events URL;
    refused, a 403; an id that names no task, a 400."""
    from django.test import Client, override_settings

    def rule(request: Any, task_id: str) -> bool:
        return task_id != "secret-task"

    with override_settings(NOTIFIER_CAN_WATCH=rule):
        client = Client()
        answer = client.get("/notifications/token/report-42")
        assert 200 == answer.status_code
        body = answer.json()
        assert "/notifications/tasks/report-42/events" == body["events"]
        claims = jwt.decode(
            body["token"],
            SECRET,
            algorithms=["HS256"],
            audience=None,
            options={"verify_aud": False},
        )
        assert "report-42" == claims["sub"]
        assert 403 == client.get("/notifications/token/secret-task").status_code
        assert 400 == client.get("/notifications/token/" + "x" * 1000).status_code


def test_the_mounted_gateway_closes_and_the_notifier_drains_when_the_server_stops(
    here: None,
) -> None:
    """with_gateway answers the server's lifespan: the default notifier runs inside it, the
    gateway serves (and so holds a Redis connection), and on leaving it both are closed."""
    import asyncio

    import httpx
    from django.core.asgi import get_asgi_application

    from notifier.django import notifier_config, token_for
    from notifier.django.asgi import with_gateway
    from notifier.gateway.lifespan import mounted_gateways

    # What the app's ready() did at set-up; another test in this process may have changed it.
    notifier.configure(notifier_config())
    app = with_gateway(get_asgi_application())
    (gateway,) = mounted_gateways(app)

    async def run() -> int:
        async with app.router.lifespan_context(app):
            running = notifier.get_notifier()
            assert running.stats()["thread_alive"]
            assert notifier.publish_progress("report-7", 50)
            assert await notifier.aflush(10)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://site") as client:
                token = token_for("report-7")["token"]
                last = await client.get(f"/notifications/tasks/report-7/last?token={token}")
            assert gateway.gateway._hub is not None  # made at first use
        assert not running.stats()["thread_alive"]
        assert gateway.gateway._hub is None
        return last.status_code

    assert 200 == asyncio.run(run())
