"""The gateway's front door, on a real ``notifier gateway`` process: origins, limits per client,
tokens in a cookie and never in a log, and bad or hostile input answered with a clear 4xx."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifier import Notifier
from notifier.events import TASK_ID_MAX
from notifier.gateway import issue_token
from notifier.testing import RedisServer, wait_until

from support.gateway import HISTORY, GatewayProcess, wait_subscribed
from support.helpers import new_task

pytestmark = pytest.mark.timeout(120)

HOSTILE = settings(
    max_examples=40,
    deadline=None,  # each example is a request to a real server
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def door(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway for the bad-input tests, with short timeouts; its log checked at the end:
    no traceback, never a token or the secret."""
    table = (
        'allowed_origins = ["https://app.example"]\n'
        "header_timeout = 2.0\nsend_timeout = 2.0\nclient_buffer = 20\n"
    )
    with GatewayProcess(
        redis_server.url, tmp_path_factory.mktemp("door"), gateway_table=table
    ) as gateway:
        yield gateway
    gateway.assert_clean_log()


@pytest.fixture
def publisher(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url, history=HISTORY)


def token_for(gateway: GatewayProcess, task: str) -> str:
    return issue_token(task, config=gateway.config)


def status_of(gateway: GatewayProcess, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET whose response is read no further (an SSE stream stays open)."""
    with (
        httpx.Client(timeout=20) as client,
        client.stream("GET", gateway.url(path), headers=headers or {}) as response,
    ):
        return response.status_code


def open_stream(gateway: GatewayProcess, task: str, headers: str = "") -> socket.socket:
    """A raw SSE request with the task's token, left open; its socket."""
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    request = f"GET /tasks/{task}/events?token={token_for(gateway, task)} HTTP/1.1\r\nHost: gw\r\n"
    sock.sendall((request + headers + "\r\n").encode())
    return sock


def status_line(sock: socket.socket, timeout: float = 20) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


# Origins --------------------------------------------------------------------------------------


def test_a_stream_from_another_sites_page_is_refused_and_logged(door: GatewayProcess) -> None:
    """With a secret set, an SSE request or WebSocket whose Origin is neither the gateway's own
    nor listed is refused (403; close 1008) even with a valid token, and the refusal is logged;
    the listed origin is served, with the CORS headers its page needs."""
    task = new_task("origin")
    path = f"/tasks/{task}/events?token={token_for(door, task)}"
    assert 403 == status_of(door, path, {"Origin": "https://evil.example"})
    own = f"http://127.0.0.1:{door.port}"
    assert 200 == status_of(door, path, {"Origin": own})
    with (
        httpx.Client(timeout=20) as client,
        client.stream("GET", door.url(path), headers={"Origin": "https://app.example"}) as ok,
    ):
        assert 200 == ok.status_code
        assert "https://app.example" == ok.headers["access-control-allow-origin"]
    ws_url = door.url(f"/ws/tasks/{task}?token={token_for(door, task)}", "ws")
    with (
        connect(ws_url, origin="https://evil.example") as ws,  # type: ignore[arg-type]
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and 1008 == closed.value.rcvd.code
    with connect(ws_url, origin="https://app.example") as ws:  # type: ignore[arg-type]
        ws.ping().wait(10)  # accepted and open
    wait_until(lambda: "https://evil.example" in door.output(), 10)
    assert "gateway_origin_refused" in door.output()


# Limits per client ----------------------------------------------------------------------------


def test_one_client_address_holds_at_most_its_share_of_streams(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """max_connections_per_client = 2: a third stream from the same address gets 429 with
    Retry-After (a WebSocket: close 1013); X-Forwarded-For is believed only from a trusted
    proxy, and then names the client that is counted."""
    table = "max_connections_per_client = 2\n"
    with GatewayProcess(redis_server.url, tmp_path, gateway_table=table) as gateway:
        task = new_task("per-client")
        held = [open_stream(gateway, task, "X-Forwarded-For: 10.0.0.1\r\n") for _ in range(2)]
        wait_subscribed(redis_server, f"task:{task}")
        for sock in held:
            assert b"200" in status_line(sock)
        with (
            httpx.Client(timeout=20) as client,
            client.stream(
                "GET",
                gateway.url(f"/tasks/{task}/events?token={token_for(gateway, task)}"),
                headers={"X-Forwarded-For": "10.0.0.2"},  # not believed: no trusted proxy
            ) as response,
        ):
            assert 429 == response.status_code
            assert response.headers["retry-after"].isdigit()
        ws_url = gateway.url(f"/ws/tasks/{task}?token={token_for(gateway, task)}", "ws")
        with connect(ws_url) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and 1013 == closed.value.rcvd.code
        for sock in held:
            sock.close()
    table += 'trusted_proxies = ["127.0.0.0/8"]\n'
    with GatewayProcess(redis_server.url, tmp_path, gateway_table=table) as gateway:
        task = new_task("per-client-proxied")
        held = [open_stream(gateway, task, "X-Forwarded-For: 10.0.0.1\r\n") for _ in range(2)]
        for sock in held:
            assert b"200" in status_line(sock)
        path = f"/tasks/{task}/events?token={token_for(gateway, task)}"
        assert 429 == status_of(gateway, path, {"X-Forwarded-For": "10.0.0.1"})
        # The client is the nearest untrusted hop: a forged first hop does not help.
        assert 429 == status_of(gateway, path, {"X-Forwarded-For": "10.9.9.9, 10.0.0.1"})
        assert 200 == status_of(gateway, path, {"X-Forwarded-For": "10.0.0.2"})
        for sock in held:
            sock.close()


# Tokens -------------------------------------------------------------------------------------


def test_a_token_in_its_cookie_is_accepted_and_no_token_is_ever_logged(
    redis_server: RedisServer, tmp_path: Path, publisher: Notifier
) -> None:
    """The token may come in the token_cookie cookie (named in [gateway]); a wrong one there is
    401. The gateway logs at debug level throughout, and no token, good or bad, is in its log."""
    table = 'token_cookie = "task_pass"\n'
    with GatewayProcess(redis_server.url, tmp_path, gateway_table=table) as gateway:
        task = new_task("cookie")
        assert publisher.publish_completed(task)
        assert publisher.flush(10)
        good = token_for(gateway, task)
        bad = good[:-4] + "AAAA"
        last = f"/tasks/{task}/last"
        assert 200 == status_of(gateway, last, {"Cookie": f"task_pass={good}"})
        assert 401 == status_of(gateway, last, {"Cookie": f"task_pass={bad}"})
        assert 401 == status_of(gateway, last, {"Cookie": f"notifier_token={good}"})
        assert 401 == status_of(gateway, f"{last}?token={bad}")
        evil = {"Origin": "https://evil.example", "Cookie": f"task_pass={good}"}
        assert 403 == status_of(gateway, last, evil)
        wait_until(lambda: "gateway_origin_refused" in gateway.output(), 10)
    log = gateway.output()
    for token in (good, bad, good.split(".")[2], bad.split(".")[2]):
        assert token not in log
    gateway.assert_clean_log()


# Bad input: a clear 4xx and nothing else ----------------------------------------------------

BAD_TASK_IDS = st.one_of(
    st.tuples(st.text(max_size=20), st.characters(categories=["Cc"]), st.text(max_size=20)).map(
        "".join
    ),
    st.text(
        alphabet=st.characters(codec="ascii", exclude_categories=["Cc", "Zs"]),
        min_size=TASK_ID_MAX + 1,
        max_size=TASK_ID_MAX + 50,
    ),
)


@HOSTILE
@given(task_id=BAD_TASK_IDS)
@example(task_id="a\nb")
@example(task_id="x" * (TASK_ID_MAX + 1))
def test_a_task_id_with_control_characters_or_too_long_gets_400(
    door: GatewayProcess, task_id: str
) -> None:
    """Every route answers 400 for a task id that holds a control character or is over the
    length limit (a token for another task would be 403: the id is checked first)."""
    quoted = quote(task_id, safe="")
    for path in (f"/tasks/{quoted}/events", f"/tasks/{quoted}/last", f"/?task={quoted}"):
        assert 400 == status_of(door, path), path


TOKENS = st.one_of(
    st.text(
        alphabet=st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=200
    ),
    st.binary(min_size=1, max_size=200).map(lambda b: b.hex()),
    st.integers(min_value=4097, max_value=12000).map(lambda n: "eyJ" + "A" * n),
)


@HOSTILE
@given(token=TOKENS)
@example(token="x" * 10_000)
def test_any_garbage_token_gets_401_never_an_error(door: GatewayProcess, token: str) -> None:
    """A token that is not one of ours, of any shape and up to what fits the headers, is 401."""
    task = new_task("garbage")
    path = f"/tasks/{task}/last"
    assert 401 == status_of(door, path, {"Authorization": f"Bearer {token}"})


def test_a_token_of_a_megabyte_or_a_request_line_of_64_kb_gets_414_or_431(
    door: GatewayProcess,
) -> None:
    """A 1 MB token in the query makes the request line too long (414); in a header, the headers
    (431); a 64 KB request line is 414. The connection is closed, and the gateway goes on."""
    megabyte = "A" * (1 << 20)
    for request, expected in (
        (f"GET /tasks/t/last?token={megabyte} HTTP/1.1\r\nHost: gw\r\n\r\n", b"414"),
        (
            f"GET /tasks/t/last HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {megabyte}\r\n\r\n",
            b"431",
        ),
        (f"GET /{'x' * 65536} HTTP/1.1\r\nHost: gw\r\n\r\n", b"414"),
    ):
        with socket.create_connection(("127.0.0.1", door.port)) as sock:
            # Refused before it was all sent, it may break off; the answer is there to read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request.encode())
            assert expected in status_line(sock)
    assert 401 == status_of(door, "/tasks/t/last")


@HOSTILE
@given(last_id=st.text(min_size=1, max_size=60).filter(lambda s: s.strip() and "\n" not in s))
@example(last_id="1-2-3")
@example(last_id="0-0" + "0" * 10_000)
@example(last_id="0 ")
def test_a_last_event_id_that_is_not_a_stream_id_gets_400(
    door: GatewayProcess, last_id: str
) -> None:
    """A Last-Event-ID (or ?last_event_id=) that is not ``<ms>-<seq>``, or is 10 KB long, is 400."""
    from notifier.gateway.entries import parse_stream_id

    if parse_stream_id(last_id.strip()) is not None and len(last_id) <= 64:
        return  # a real stream id: resuming from it is fine
    task = new_task("resume")
    path = f"/tasks/{task}/events?token={token_for(door, task)}"
    assert 400 == status_of(door, path + f"&last_event_id={quote(last_id, safe='')}")
    # (httpx sends no header value with whitespace at either end, nor one that is not ASCII)
    if last_id.isascii() and last_id.isprintable() and last_id == last_id.strip():
        assert 400 == status_of(door, path, {"Last-Event-ID": last_id})


def test_a_websocket_frame_of_16_mb_from_the_client_closes_with_1009(
    door: GatewayProcess,
) -> None:
    """A client that sends the gateway a huge frame is closed with 1009 (message too big)."""
    task = new_task("ws-big")
    url = door.url(f"/ws/tasks/{task}?token={token_for(door, task)}", "ws")
    with connect(url, max_size=None) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.send("x" * (16 << 20))
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None and 1009 == closed.value.rcvd.code


def test_a_client_that_never_reads_is_cut_off_and_its_stream_freed(
    door: GatewayProcess, redis_server: RedisServer, publisher: Notifier
) -> None:
    """A client that sends its request and then reads nothing, while large events arrive, is
    cut off once nothing sent to it is taken for send_timeout; the gateway holds no stream for
    it afterwards (the overflow is logged)."""
    task = new_task("never-reads")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", door.port))
    token = token_for(door, task)
    sock.sendall(f"GET /tasks/{task}/events?token={token} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
    wait_subscribed(redis_server, f"task:{task}")
    pad = "x" * 16000
    for i in range(400):
        assert publisher.publish(task, "tick", {"seq": i, "pad": pad})
    assert publisher.flush(30)
    wait_until(lambda: not _subscribers(redis_server, f"task:{task}"), 60)  # its feed closed
    sock.close()
    assert "gateway_client_too_slow" in door.output()


def test_a_websocket_that_never_reads_is_cut_off_and_its_socket_closed(
    door: GatewayProcess, publisher: Notifier
) -> None:
    """WebSocket clients that upgrade to a task with a megabyte of history and then read
    nothing are cut off once nothing sent to them is taken for send_timeout: the gateway
    closes each socket (a close frame would wait behind the unread bytes for good), so it holds
    none of them afterwards."""
    task = new_task("ws-never-reads")
    pad = "x" * 4000
    for i in range(300):
        assert publisher.publish(task, "tick", {"seq": i, "pad": pad})
    assert publisher.flush(30)
    token = token_for(door, task)
    upgrade = (
        f"GET /ws/tasks/{task}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{door.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()
    clients = []
    for _ in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", door.port))
        sock.sendall(upgrade)
        clients.append(sock)
    ports = {sock.getsockname()[1] for sock in clients}
    try:
        wait_until(lambda: ports == door.holding(ports), 20)
        wait_until(lambda: not door.holding(ports), 60)  # each cut off after send_timeout (2 s)
    finally:
        for sock in clients:
            sock.close()
    assert "gateway_client_too_slow" in door.output()


def _subscribers(redis: RedisServer, channel: str) -> int:
    with redis.client() as client:
        return int(client.pubsub_numsub(channel)[0][1])


def test_a_slow_loris_client_is_cut_off_after_the_header_timeout(door: GatewayProcess) -> None:
    """A client that sends its headers a byte at a time, slower than header_timeout allows, gets
    408 and is closed; another client is served meanwhile."""
    request = b"GET /tasks/loris/last HTTP/1.1\r\nHost: gw\r\nX-Padding: " + b"p" * 200
    with socket.create_connection(("127.0.0.1", door.port)) as sock:
        sock.settimeout(0.5)  # the client's pace: a byte, then half a second listening
        started = time.monotonic()
        answer = b""
        for sent, byte in enumerate(request):
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(4096)
            except TimeoutError:
                if sent == 3:
                    assert 401 == status_of(door, "/tasks/other/last")  # others are served
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 60  # cut off, not held for the whole request
