"""Who may read from where, on a real ``notifier gateway``: the real client behind a proxy decides
the loopback rule, origins without a secret, CORS preflights for a page on another origin, and
what ``allowed_origins = ["*"]`` does and does not hand out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifier import Notifier
from notifier.gateway import issue_token
from notifier.testing import RedisServer

from support.gateway import HISTORY, GatewayProcess
from support.helpers import new_task

pytestmark = pytest.mark.timeout(120)

APP = "https://app.example"


@pytest.fixture
def publisher(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url, history=HISTORY)


def get(gateway: GatewayProcess, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(gateway.url(path), headers=headers, timeout=20)


def ws_close_code(url: str, origin: str) -> int | None:
    """The close code a WebSocket from a page on ``origin`` gets before any event."""
    with connect(url, origin=origin) as ws, pytest.raises(ConnectionClosed) as closed:  # type: ignore[arg-type]
        ws.recv(timeout=10)
    return None if closed.value.rcvd is None else closed.value.rcvd.code


# Without a secret -----------------------------------------------------------------------------


def test_without_a_secret_behind_a_proxy_the_real_client_decides(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """No secret, a proxy on the same host: a visitor whose X-Forwarded-For names another
    address is refused (403, with the reason), however loopback the proxy's own peer address
    is; a loopback client through the proxy, or straight, is served."""
    table = 'trusted_proxies = ["127.0.0.1"]\n'
    with GatewayProcess(redis_server.url, tmp_path, secret=None, gateway_table=table) as gateway:
        path = f"/tasks/{new_task('proxied')}/last"
        refused = get(gateway, path, {"X-Forwarded-For": "203.0.113.9"})
        assert 403 == refused.status_code
        assert "loopback clients only" in refused.json()["error"]
        assert 404 == get(gateway, path, {"X-Forwarded-For": "127.0.0.1"}).status_code
        assert 404 == get(gateway, path, {}).status_code  # served: the task has no events
        assert "203.0.113.9" in gateway.output()  # the refusal is logged, with the client
    gateway.assert_clean_log()


def test_without_a_secret_only_pages_of_no_origin_its_own_or_a_listed_one_read(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """No secret: a web page of another origin, open in a browser on this host, is refused
    (403; WebSocket close 1008); so is one whose name was rebound to 127.0.0.1 (its Host is not
    this machine's); no Origin, the gateway's own and a listed one are served."""
    table = f'allowed_origins = ["{APP}"]\n'
    with GatewayProcess(redis_server.url, tmp_path, secret=None, gateway_table=table) as gateway:
        task = new_task("anonymous-origin")
        path = f"/tasks/{task}/last"
        own = f"http://127.0.0.1:{gateway.port}"
        assert 403 == get(gateway, path, {"Origin": "https://evil.example"}).status_code
        rebound = {
            "Origin": f"http://evil.example:{gateway.port}",
            "Host": f"evil.example:{gateway.port}",
        }
        refused = get(gateway, path, rebound)
        assert 403 == refused.status_code
        assert "Host header must name this machine" in refused.json()["error"]
        assert 404 == get(gateway, path, {"Origin": own}).status_code
        assert 404 == get(gateway, path, {"Origin": APP}).status_code
        assert 404 == get(gateway, path, {"Host": f"localhost:{gateway.port}"}).status_code
        ws_url = gateway.url(f"/ws/tasks/{task}", "ws")
        assert 1008 == ws_close_code(ws_url, "https://evil.example")
        assert 1008 == ws_close_code(ws_url, "null")
    with GatewayProcess(redis_server.url, tmp_path, secret=None) as unlisted:  # no list at all
        assert 403 == get(unlisted, path, {"Origin": "https://evil.example"}).status_code
        ws_url = unlisted.url(f"/ws/tasks/{task}", "ws")
        assert 1008 == ws_close_code(ws_url, "https://evil.example")


# CORS -----------------------------------------------------------------------------------------


def preflight(gateway: GatewayProcess, path: str, origin: str) -> httpx.Response:
    """What a browser sends before watch()'s fetch: the method and the headers it will use."""
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,last-event-id",
    }
    return httpx.request("OPTIONS", gateway.url(path), headers=headers, timeout=20)


def test_a_listed_origins_preflight_is_answered_and_every_answer_carries_cors(
    redis_server: RedisServer, tmp_path: Path, publisher: Notifier
) -> None:
    """A page on a listed origin: its preflight gets 204 with the method, the Authorization
    and Last-Event-ID headers and a max age; /last, /client.js and a refusal (401, so that
    watch() can ask for a new token) carry Access-Control-Allow-Origin. Another origin's
    preflight is 403 and carries none."""
    table = f'allowed_origins = ["{APP}"]\n'
    with GatewayProcess(redis_server.url, tmp_path, gateway_table=table) as gateway:
        task = new_task("cors")
        assert publisher.publish_completed(task)
        assert publisher.flush(10)
        for path in (f"/tasks/{task}/events", f"/tasks/{task}/last", "/client.js"):
            answer = preflight(gateway, path, APP)
            assert 204 == answer.status_code
            assert APP == answer.headers["access-control-allow-origin"]
            assert "true" == answer.headers["access-control-allow-credentials"]
            assert "GET" in answer.headers["access-control-allow-methods"]
            allowed = answer.headers["access-control-allow-headers"].lower()
            assert {"authorization", "last-event-id"} <= {h.strip() for h in allowed.split(",")}
            assert int(answer.headers["access-control-max-age"]) > 0
        refused = preflight(gateway, f"/tasks/{task}/events", "https://evil.example")
        assert 403 == refused.status_code
        assert "access-control-allow-origin" not in refused.headers
        token = issue_token(task, config=gateway.config)
        last = get(
            gateway, f"/tasks/{task}/last", {"Origin": APP, "Authorization": f"Bearer {token}"}
        )
        assert (200, APP) == (last.status_code, last.headers["access-control-allow-origin"])
        assert "completed" == last.json()["type"]
        script = get(gateway, "/client.js", {"Origin": APP})
        assert (200, APP) == (script.status_code, script.headers["access-control-allow-origin"])
        unauthorized = get(gateway, f"/tasks/{task}/last", {"Origin": APP})
        assert 401 == unauthorized.status_code
        assert APP == unauthorized.headers["access-control-allow-origin"]
        assert "retry-after" in unauthorized.headers["access-control-expose-headers"].lower()
    gateway.assert_clean_log()


def test_a_star_lets_any_page_read_with_its_token_but_never_with_credentials(
    redis_server: RedisServer, tmp_path: Path, publisher: Notifier
) -> None:
    """allowed_origins = ["*"]: any origin's page reads with the token it sends, and is never
    told it may send credentials; the browser's cookie from such a page is not a token; an
    opaque origin (null) is refused outright."""
    table = 'allowed_origins = ["*"]\n'
    with GatewayProcess(redis_server.url, tmp_path, gateway_table=table) as gateway:
        task = new_task("star")
        assert publisher.publish_completed(task)
        assert publisher.flush(10)
        token = issue_token(task, config=gateway.config)
        last = f"/tasks/{task}/last"
        anywhere = "https://anywhere.example"
        read = get(gateway, last, {"Origin": anywhere, "Authorization": f"Bearer {token}"})
        assert (200, anywhere) == (read.status_code, read.headers["access-control-allow-origin"])
        assert "access-control-allow-credentials" not in read.headers
        answer = preflight(gateway, last, anywhere)
        assert 204 == answer.status_code
        assert "access-control-allow-credentials" not in answer.headers
        with_cookie = {"Origin": anywhere, "Cookie": f"notifier_token={token}"}
        assert 401 == get(gateway, last, with_cookie).status_code
        assert 200 == get(gateway, last, {"Cookie": f"notifier_token={token}"}).status_code
        opaque = get(gateway, last, {"Origin": "null", "Authorization": f"Bearer {token}"})
        assert 403 == opaque.status_code
        assert "access-control-allow-origin" not in opaque.headers
        assert 403 == preflight(gateway, last, "null").status_code
        ws_url = gateway.url(f"/ws/tasks/{task}?token={token}", "ws")
        assert 1008 == ws_close_code(ws_url, "null")
    gateway.assert_clean_log()
