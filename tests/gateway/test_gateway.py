"""notifier.gateway, run as a real server process (uvicorn) and read by real SSE and WebSocket
clients: the wire format, resume without gaps, resets, tokens, limits, one Redis connection."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifier import Notifier, NotifierConfig
from notifier.config import GatewayConfig, RedisConfig
from notifier.gateway import create_app, issue_token
from notifier.testing import RedisServer, wait_until

from support.faultproxy import FaultProxy
from support.gateway import (
    HISTORY,
    SECRET,
    GatewayProcess,
    decoded,
    get_json,
    sse_events,
    stream_ids,
    wait_subscribed,
)
from support.helpers import new_task

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gateway(redis_server: RedisServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    """The gateway against the session's redis-server; its log checked afterwards: no traceback
    and never a token or the secret."""
    with GatewayProcess(redis_server.url, tmp_path) as server:
        yield server
    server.assert_clean_log()


@pytest.fixture
def publisher(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url, history=HISTORY)


def events_url(gateway: GatewayProcess, task: str, **query: str) -> str:
    query.setdefault("token", issue_token(task, config=gateway.config))
    return gateway.url(f"/tasks/{task}/events?" + "&".join(f"{k}={v}" for k, v in query.items()))


def run_task(n: Notifier, task: str, steps: int = 3) -> None:
    for i in range(1, steps + 1):
        assert n.publish_progress(task, i * 100 / (steps + 1), message=f"step {i}")
    assert n.publish_completed(task, result={"steps": steps})
    assert n.flush(10)


# SSE: the wire format, live, resume, reset --------------------------------------------------


def test_sse_sends_each_event_with_its_stream_id_type_and_json_then_ends(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer
) -> None:
    """Read by a real SSE client: a retry hint, then per event id = its history entry id,
    event = its type, data = its JSON; the stream ends after the terminal event."""
    task = new_task("sse")
    run_task(publisher, task)
    status, events = sse_events(events_url(gateway, task))
    assert 200 == status
    assert 2000 == events[0].retry and "" == events[0].data
    body = events[1:]
    assert stream_ids(redis_server, f"task-history:{task}") == [e.id for e in body]
    assert ["progress", "progress", "progress", "completed"] == [e.event for e in body]
    assert [25.0, 50.0, 75.0] == [json.loads(e.data)["data"]["progress"] for e in body[:3]]
    assert {"steps": 3} == json.loads(body[-1].data)["data"]["result"]


def test_sse_switches_from_history_to_live_without_a_gap_or_a_repeat(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer
) -> None:
    """Connected in mid-task: the history so far, then each live event once, in order."""
    task = new_task("live")
    for i in range(5):
        assert publisher.publish(task, "tick", {"seq": i})
    assert publisher.flush(10)
    received: list[Any] = []
    reader = threading.Thread(
        target=lambda: received.extend(sse_events(events_url(gateway, task))[1])
    )
    reader.start()
    wait_subscribed(redis_server, f"task:{task}")
    for i in range(5, 200):
        assert publisher.publish(task, "tick", {"seq": i})
    assert publisher.publish_failed(task, RuntimeError("disk full"))
    reader.join(60)
    events = decoded(received)
    assert list(range(200)) == [e["data"]["seq"] for e in events[:-1]]
    assert "failed" == events[-1]["type"]


@pytest.mark.parametrize("how", ["header", "query"])
def test_a_reconnect_resumes_exactly_after_the_last_event_id(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer, how: str
) -> None:
    """Last-Event-ID (or ?last_event_id=) resumes after that entry: no gap, no repeat."""
    task = new_task(f"resume-{how}")
    for i in range(4):
        assert publisher.publish(task, "tick", {"seq": i})
    assert publisher.flush(10)
    ids = stream_ids(redis_server, f"task-history:{task}")
    for i in range(4, 8):
        assert publisher.publish(task, "tick", {"seq": i})
    assert publisher.publish_completed(task)
    assert publisher.flush(10)
    if how == "header":
        status, events = sse_events(events_url(gateway, task), {"Last-Event-ID": ids[1]})
    else:
        status, events = sse_events(events_url(gateway, task, last_event_id=ids[1]))
    assert 200 == status
    assert [2, 3, 4, 5, 6, 7, None] == [e["data"].get("seq") for e in decoded(events)]
    assert "completed" == events[-1].event


def test_a_reconnect_after_the_end_gets_204_which_stops_an_eventsource(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer
) -> None:
    """The client already has the terminal event: nothing more to send, and 204 says so."""
    task = new_task("done")
    run_task(publisher, task)
    last = stream_ids(redis_server, f"task-history:{task}")[-1]
    status, events = sse_events(events_url(gateway, task), {"Last-Event-ID": last})
    assert (204, []) == (status, events)


def read_in_thread(url: str, last_id: str) -> tuple[threading.Thread, list[Any], threading.Event]:
    """Resume an SSE stream from ``last_id`` on a thread of its own, until the server ends it:
    the thread, the events (complete once it is joined), and a flag set when a reset came."""
    received: list[Any] = []
    reset_sent = threading.Event()

    def on_event(event: Any) -> None:
        if event.event == "reset":
            reset_sent.set()

    reader = threading.Thread(
        target=lambda: received.extend(
            sse_events(url, {"Last-Event-ID": last_id}, on_event=on_event)[1]
        )
    )
    reader.start()
    return reader, received, reset_sent


def test_an_id_the_history_no_longer_holds_gets_a_reset_with_the_latest_event(
    gateway: GatewayProcess,
    redis_server: RedisServer,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """The stream kept its last 3 entries: resuming from a trimmed id starts with
    `event: reset` carrying the latest event, so the client knows it missed some."""
    n = notifier_factory(redis_server.url, history={**HISTORY, "maxlen": 3})
    task = new_task("trimmed")
    assert n.publish(task, "tick", {"seq": 0})
    assert n.flush(10)
    (first,) = stream_ids(redis_server, f"task-history:{task}")
    for i in range(1, 10):
        assert n.publish(task, "tick", {"seq": i})
    assert n.flush(10)
    latest = stream_ids(redis_server, f"task-history:{task}")[-1]
    reader, received, reset_sent = read_in_thread(events_url(gateway, task), first)
    # The terminal event only once the reset is out: published earlier, it would be the latest.
    assert reset_sent.wait(30)
    assert n.publish_completed(task)
    assert n.flush(10)
    reader.join(60)
    reset = received[1]
    assert ("reset", latest, 9) == (reset.event, reset.id, json.loads(reset.data)["data"]["seq"])
    assert ["completed"] == [e.event for e in received[2:]]  # live again, from after it


def test_an_expired_history_resets_to_nothing(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer
) -> None:
    """Nothing is left of the task (expired, or never there): the reset carries null, and live
    events follow it."""
    task = new_task("expired")
    reader, received, reset_sent = read_in_thread(events_url(gateway, task), "1-0")
    assert reset_sent.wait(30)  # published earlier, the terminal event would be the reset's
    assert publisher.publish_completed(task)
    assert publisher.flush(10)
    reader.join(60)
    assert ("reset", "null") == (received[1].event, received[1].data)
    assert "completed" == received[-1].event


# Tokens ------------------------------------------------------------------------------------


def _forged(task: str, key: str = SECRET, **claims: Any) -> str:
    """A JWT made by hand, with claims or a key the gateway must refuse."""
    now = int(time.time())
    body = {"sub": task, "aud": "notifier-gateway", "iat": now, "exp": now + 60, **claims}
    return jwt.encode(body, key, algorithm="HS256")


def token_cases(task: str) -> dict[str, tuple[dict[str, str], str, int]]:
    """name -> (headers, token query value, expected status)."""
    good = issue_token(task, config=_config_for_tokens())
    return {
        "missing": ({}, "", 401),
        "garbled": ({}, "not-a-jwt", 401),
        "expired": ({}, _forged(task, exp=int(time.time()) - 10), 401),
        "other secret": ({}, _forged(task, key="another-secret-another-secret-xx"), 401),
        "other audience": ({}, _forged(task, aud="something-else"), 401),
        "other task": ({}, issue_token("another-task", config=_config_for_tokens()), 403),
        "query token": ({}, good, 200),
        "bearer header": ({"Authorization": f"Bearer {good}"}, "", 200),
    }


def _config_for_tokens() -> NotifierConfig:
    return NotifierConfig(gateway=GatewayConfig(secret=SECRET))


def test_every_route_wants_a_token_for_its_own_task(
    gateway: GatewayProcess, publisher: Notifier
) -> None:
    """Missing, garbled, expired, forged or foreign-audience tokens get 401; a valid token for
    another task 403; a valid one, in the query or as a Bearer header, 200. Page included."""
    task = new_task("tokens")
    run_task(publisher, task, steps=1)
    for name, (headers, token, expected) in token_cases(task).items():
        query = f"token={token}" if token else ""
        for path in (f"/tasks/{task}/last?{query}", f"/?task={task}&{query}"):
            response = httpx.get(gateway.url(path), headers=headers, timeout=10)
            assert expected == response.status_code, (name, path, response.text)
        status, _ = sse_events(gateway.url(f"/tasks/{task}/events?{query}"), headers)
        assert expected == status, name
        if expected == 401:
            assert "Bearer" in response.headers["www-authenticate"]


@pytest.mark.parametrize("case", ["missing", "expired", "other task"])
def test_a_websocket_without_the_right_token_is_closed_with_1008(
    gateway: GatewayProcess, case: str
) -> None:
    task = new_task("ws-token")
    _, token, _ = token_cases(task)[case]
    url = gateway.url(f"/ws/tasks/{task}?token={token}", "ws")
    with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and 1008 == closed.value.rcvd.code


def test_the_page_is_served_for_its_task_with_a_strict_referrer_policy(
    gateway: GatewayProcess,
) -> None:
    """GET /?task=&token= serves the page; the token in its URL is never sent on as a referrer."""
    task = new_task("page")
    token = issue_token(task, config=gateway.config)
    response = httpx.get(gateway.url(f"/?task={task}&token={token}"), timeout=10)
    assert 200 == response.status_code
    assert "text/html; charset=utf-8" == response.headers["content-type"]
    assert "no-referrer" == response.headers["referrer-policy"]
    assert "new EventSource" in response.text
    assert 400 == httpx.get(gateway.url(f"/?token={token}"), timeout=10).status_code


def test_without_a_secret_only_loopback_clients_are_served(redis_server: RedisServer) -> None:
    """No secret: no tokens, and a client from another address is refused (403), unless
    allow_anonymous is set."""

    async def statuses(gateway: GatewayConfig, hosts: list[str]) -> list[int]:
        app = create_app(NotifierConfig(redis=RedisConfig(url=redis_server.url), gateway=gateway))
        out = []
        try:
            for host in hosts:
                transport = httpx.ASGITransport(app=app, client=(host, 5000))
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://localhost"
                ) as client:
                    out.append((await client.get("/tasks/none-here/last")).status_code)
        finally:
            await app.state.gateway.close()
        return out

    # 404: served (the task has no events); 403: refused.
    assert [404, 404, 403] == asyncio.run(
        statuses(GatewayConfig(), ["127.0.0.1", "::1", "10.1.2.3"])
    )
    assert [404] == asyncio.run(statuses(GatewayConfig(allow_anonymous=True), ["10.1.2.3"]))


def test_the_command_refuses_another_host_without_a_secret(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """`notifier gateway --host 0.0.0.0` with no secret: exit 1, saying what to set."""
    server = GatewayProcess(redis_server.url, tmp_path, secret=None, host="0.0.0.0")
    with pytest.raises(RuntimeError, match="gateway exited") as refused:
        server.start()
    assert "refusing to serve on 0.0.0.0 without a gateway secret" in str(refused.value)
    allowed = GatewayProcess(
        redis_server.url, tmp_path, secret=None, host="0.0.0.0",
        gateway_table="allow_anonymous = true\n",
    )  # fmt: skip
    with allowed:
        assert "every task is readable without a token" in allowed.output()


# WebSocket and /last -----------------------------------------------------------------------


def test_the_websocket_sends_json_frames_resumes_and_closes_with_1000(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer
) -> None:
    """The same events as JSON text frames; ?last_event_id= resumes; close 1000 at the end."""
    task = new_task("ws")
    run_task(publisher, task)
    token = issue_token(task, config=gateway.config)
    first = stream_ids(redis_server, f"task-history:{task}")[0]
    for query, expected in ((f"token={token}", 4), (f"token={token}&last_event_id={first}", 3)):
        frames = []
        url = gateway.url(f"/ws/tasks/{task}?{query}", "ws")
        with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(ws.recv(timeout=30)))
        assert closed.value.rcvd is not None and 1000 == closed.value.rcvd.code
        assert expected == len(frames) and "completed" == frames[-1]["type"]


def test_last_answers_the_latest_event_or_404(gateway: GatewayProcess, publisher: Notifier) -> None:
    task = new_task("last")
    assert publisher.publish_progress(task, 60, message="almost")
    assert publisher.flush(10)
    token = issue_token(task, config=gateway.config)
    status, body = get_json(gateway.url(f"/tasks/{task}/last?token={token}"))
    assert (200, 60) == (status, body["data"]["progress"])
    other = new_task("none")
    other_token = issue_token(other, config=gateway.config)
    assert 404 == get_json(gateway.url(f"/tasks/{other}/last?token={other_token}"))[0]


# Faults and limits -------------------------------------------------------------------------


def test_the_gateway_follows_its_redis_connection_being_reset_without_a_gap(
    redis_server: RedisServer,
    tmp_path: Path,
    publisher: Notifier,
    proxy_factory: Callable[[RedisServer], FaultProxy],
) -> None:
    """The gateway's connections to Redis reset in mid-task: it subscribes again and reads
    what it missed from the history; the client sees every event once."""
    proxy = proxy_factory(redis_server)
    with GatewayProcess(proxy.url, tmp_path) as gateway:
        task = new_task("reset")
        received: list[Any] = []
        arrived: list[Any] = []
        reader = threading.Thread(
            target=lambda: received.extend(
                sse_events(events_url(gateway, task), on_event=arrived.append)[1]
            )
        )
        reader.start()
        wait_subscribed(redis_server, f"task:{task}")
        for i in range(50):
            assert publisher.publish(task, "tick", {"seq": i})
        assert publisher.flush(10)
        # In mid-task: the stream is open and live (its first 50 events arrived).
        wait_until(lambda: len(decoded(list(arrived))) >= 50, 30)
        assert proxy.reset_all() >= 1
        for i in range(50, 100):  # while the gateway reconnects
            assert publisher.publish(task, "tick", {"seq": i})
        wait_subscribed(redis_server, f"task:{task}")
        assert publisher.publish_completed(task)
        reader.join(60)
    seen = [(e.id, json.loads(e.data)["data"].get("seq")) for e in received if e.data]
    assert list(range(100)) == [seq for _, seq in seen[:-1]], (seen, gateway.output())
    assert "Traceback" not in gateway.output(), gateway.output()


def test_a_client_that_connects_while_redis_is_unavailable_waits_for_it(
    redis_server: RedisServer,
    tmp_path: Path,
    publisher: Notifier,
    proxy_factory: Callable[[RedisServer], FaultProxy],
) -> None:
    """A stream opened while Redis does not answer is not refused at once (an EventSource
    answered 503 gives up for good): the gateway tries again, and the client gets its history
    once Redis is back. Only a Redis gone for longer than OPEN_PATIENCE gets 503."""
    proxy = proxy_factory(redis_server)
    task = new_task("unavailable")
    for i in range(3):
        assert publisher.publish(task, "tick", {"seq": i})
    assert publisher.flush(10)
    with GatewayProcess(proxy.url, tmp_path) as gateway:
        proxy.blackhole()
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.extend(sse_events(events_url(gateway, task))))
        reader.start()
        wait_until(lambda: "gateway_redis_unavailable" in gateway.output(), 30)
        proxy.forward()
        wait_subscribed(redis_server, f"task:{task}")
        assert publisher.publish_completed(task)
        reader.join(60)
        status, events = got
        assert 200 == status
        assert [0, 1, 2, None] == [e["data"].get("seq") for e in decoded(events)]

        proxy.refuse()
        assert 503 == sse_events(events_url(gateway, new_task("refused")))[0]
    assert "Traceback" not in gateway.output(), gateway.output()


EVENTS = 900  # 16 KB each: far more than the sockets between and the client's buffer hold


def test_a_slow_client_is_cut_off_with_a_reason_and_resumes_without_a_gap(
    redis_server: RedisServer, tmp_path: Path, publisher: Notifier
) -> None:
    """client_buffer = 20: a client that stops reading while 900 large events arrive (14 MB,
    many times what the sockets between hold) is sent `event: overflow` with the reason, and its
    reconnect from the last id it got misses nothing (the history keeps 1,000). send_timeout is
    far longer than the publishing takes on a loaded machine: past it, the client would be cut
    off without the overflow frame (tests/gateway/test_gateway_door.py tests that)."""
    table = "client_buffer = 20\nsend_timeout = 600.0\n"
    with (
        GatewayProcess(redis_server.url, tmp_path, gateway_table=table) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port)) as sock,
    ):
        task = new_task("slow")
        token = issue_token(task, config=gateway.config)
        # Small enough that the events back up into the gateway, large enough that the window
        # reopens in whole segments once the client reads (4 KB crawls at 8 KB per 200 ms).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(
            f"GET /tasks/{task}/events?token={token} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()
        )
        wait_subscribed(redis_server, f"task:{task}")
        pad = "x" * 16000
        for i in range(EVENTS):
            assert publisher.publish(task, "tick", {"seq": i, "pad": pad})
        assert publisher.publish_completed(task)
        assert publisher.flush(30)
        data = b""
        sock.settimeout(30)
        while b"event: overflow" not in data:  # now read what was sent, until the cut
            chunk = sock.recv(1 << 20)
            assert chunk, data[-300:]
            data += chunk
        assert b"client too slow" in data
        got = [json.loads(line[6:])["data"]["seq"] for line in data.split(b"\n")
               if line.startswith(b"data: {") and b'"tick"' in line]  # fmt: skip
        ids = [line[4:].decode().strip() for line in data.split(b"\n") if line.startswith(b"id: ")]
        assert got == list(range(len(got))) and len(got) < EVENTS
        status, rest = sse_events(events_url(gateway, task), {"Last-Event-ID": ids[-1]})
        assert 200 == status
        assert list(range(len(got), EVENTS)) == [e["data"]["seq"] for e in decoded(rest)[:-1]]
        wait_until(lambda: "gateway_client_too_slow" in gateway.output(), 10)


def test_max_connections_caps_open_streams(redis_server: RedisServer, tmp_path: Path) -> None:
    """max_connections = 2: a third stream gets 503 while two are open."""
    with GatewayProcess(
        redis_server.url, tmp_path, gateway_table="max_connections = 2\n"
    ) as gateway:
        task = new_task("cap")
        held = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", gateway.port))
            token = issue_token(task, config=gateway.config)
            s.sendall(
                f"GET /tasks/{task}/events?token={token} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()
            )
            held.append(s)
        wait_subscribed(redis_server, f"task:{task}")
        wait_until(lambda: sse_events(events_url(gateway, task))[0] == 503, 10)
        for s in held:
            s.close()


# Scale --------------------------------------------------------------------------------------


async def _many_subscribers(
    port: int, tasks: list[str], tokens: dict[str, str], per_task: int, ready: threading.Event
) -> dict[str, list[int]]:
    """per_task raw SSE connections per task; each is read to its end. The events' seq numbers
    received on each connection."""

    async def one(task: str) -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /tasks/{task}/events?token={tokens[task]} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()
        )
        seqs: list[int] = []
        buffer = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data: {"):
                    event = json.loads(line[6:])
                    if event["type"] == "tick":
                        seqs.append(event["data"]["seq"])
                    elif event["type"] == "completed":
                        writer.close()
                        return seqs
        return seqs

    jobs = [asyncio.create_task(one(task)) for task in tasks for _ in range(per_task)]
    ready.set()
    results = await asyncio.gather(*jobs)
    out: dict[str, list[int]] = {}
    for i, seqs in enumerate(results):
        out.setdefault(tasks[i // per_task], []).append(len(seqs))
    return out


@pytest.mark.timeout(180)
def test_a_thousand_subscribers_share_one_pubsub_connection(
    redis_factory: Callable[..., RedisServer],
    tmp_path: Path,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """1,000 SSE subscribers on 10 tasks: every one receives every event, and the gateway holds
    a handful of Redis connections (one pub/sub, a small pool for history), not 2 each."""
    redis_server = redis_factory()  # of its own: every client of it but two is the gateway's
    publisher = notifier_factory(redis_server.url, history=HISTORY)
    publisher.start()
    with GatewayProcess(
        redis_server.url, tmp_path, gateway_table="max_connections_per_client = 2000\n"
    ) as gateway:
        results, held = _fan_out(gateway, publisher, redis_server)
    assert all(counts == [20] * 100 for counts in results.values()), results
    assert 10 == len(results)
    assert held <= 5  # the pub/sub connection and the history pool (4 at most)


def _fan_out(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer
) -> tuple[dict[str, list[int]], int]:
    tasks = [new_task(f"many{i}") for i in range(10)]
    tokens = {t: issue_token(t, config=gateway.config) for t in tasks}
    ready = threading.Event()
    results: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: results.update(
            asyncio.run(_many_subscribers(gateway.port, tasks, tokens, 100, ready))
        )
    )
    runner.start()
    assert ready.wait(30)
    for task in tasks:
        wait_subscribed(redis_server, f"task:{task}")
    for i in range(20):
        for task in tasks:
            assert publisher.publish(task, "tick", {"seq": i})
    assert publisher.flush(10)
    with redis_server.client() as client:
        held = len(client.client_list()) - 2  # this client and the publisher's
    for task in tasks:
        assert publisher.publish_completed(task)
    assert publisher.flush(10)
    runner.join(120)
    return results, held


def test_a_quiet_stream_gets_a_comment_line_every_heartbeat(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """heartbeat_interval = 0.5: an open stream with no events carries `: keep-alive` lines."""
    with GatewayProcess(
        redis_server.url, tmp_path, gateway_table="heartbeat_interval = 0.5\n"
    ) as gateway:
        task = new_task("quiet")
        token = issue_token(task, config=gateway.config)
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(
                f"GET /tasks/{task}/events?token={token} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()
            )
            sock.settimeout(10)
            data = b""
            while data.count(b": keep-alive") < 2:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
        assert b"retry: 2000" in data
