"""``notifier gateway --workers N``: worker processes on one port under uvicorn's supervisor, the
connections spread over them, a killed worker replaced and its clients resumed without a gap."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from notifier import Notifier
from notifier.config import GatewayConfig
from notifier.gateway import issue_token
from notifier.gateway.listening import REUSE_PORT
from notifier.gateway.server import worker_count
from notifier.testing import RedisServer, wait_until

from support.gateway import (
    HISTORY,
    GatewayProcess,
    client_port,
    decoded,
    wait_subscribed,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gateway(redis_server: RedisServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    """Two workers against the session's redis-server, asked for by ``--workers 2`` over a file
    that says 3; the log checked afterwards: no traceback, never the secret."""
    with GatewayProcess(redis_server.url, tmp_path, workers=2, gateway_table="workers = 3\n") as gw:
        yield gw
    gw.assert_clean_log()


@pytest.fixture
def publisher(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url, history=HISTORY)


def events_url(gateway: GatewayProcess, task: str) -> str:
    return gateway.url(f"/tasks/{task}/events?token={issue_token(task, config=gateway.config)}")


def test_two_workers_serve_one_port_and_the_connections_are_spread_over_both(
    gateway: GatewayProcess,
) -> None:
    """--workers 2 (over workers = 3 in the file): two processes listen on the port, each on a
    socket of its own with SO_REUSEPORT, and 40 streams opened at once are held by both."""
    workers = gateway.worker_pids()
    assert 2 == len(workers)
    assert sorted(workers) == sorted(gateway.listening_pids())
    if REUSE_PORT:
        assert "each listening on its own SO_REUSEPORT socket" in gateway.output()
        assert 2 == len({gateway.listening_socket(pid) for pid in workers})  # not one shared
    else:
        assert "one shared socket" in gateway.output()
    task = f"spread-{secrets.token_hex(4)}"
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    with httpx.Client(timeout=30, limits=limits) as client, contextlib.ExitStack() as streams:
        ports = []
        for _ in range(40):
            response = streams.enter_context(client.stream("GET", events_url(gateway, task)))
            assert 200 == response.status_code
            ports.append(client_port(response))
        held = Counter(gateway.worker_serving(port) for port in ports)
    assert set(workers) == set(held), held  # every stream held by a worker, and each has some


def read_resuming(
    url: str,
    on_event: Callable[[ServerSentEvent, httpx.Response], None],
    timeout: float,
) -> tuple[list[ServerSentEvent], int]:
    """Every event of an SSE stream up to its terminal one, and the connections it took: a
    broken stream, or a connection refused or reset, is made again with ``Last-Event-ID`` = the
    last id received, as a browser's EventSource does, until ``timeout``."""
    deadline = time.monotonic() + timeout
    events: list[ServerSentEvent] = []
    connections = 0
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            last_ids = [e.id for e in events if e.id]
            headers = {"Last-Event-ID": last_ids[-1]} if last_ids else {}
            try:
                with connect_sse(client, "GET", url, headers=headers) as source:
                    assert 200 == source.response.status_code
                    connections += 1
                    for event in source.iter_sse():
                        events.append(event)
                        on_event(event, source.response)
            except httpx.TransportError:
                continue  # the worker died under the stream, or with the connection queued
            if events and events[-1].event in ("completed", "failed", "cancelled"):
                return events, connections
    raise TimeoutError(f"no terminal event within {timeout}s; {len(events)} events")


def test_a_stream_whose_worker_is_killed_resumes_on_another_without_a_gap_or_a_repeat(
    gateway: GatewayProcess, publisher: Notifier, redis_server: RedisServer
) -> None:
    """SIGKILL the worker serving a stream mid-task: the client reconnects with Last-Event-ID
    and has each of 300 events once, in order, then the terminal one; the supervisor starts a
    new worker in the dead one's place."""
    task = f"kill-{secrets.token_hex(4)}"
    before = gateway.worker_pids()
    killed: list[int] = []
    worker_killed = threading.Event()

    def kill_its_worker(event: ServerSentEvent, response: httpx.Response) -> None:
        if killed or not event.data or decoded([event])[0]["data"].get("seq", -1) < 20:
            return
        pid = gateway.worker_serving(client_port(response))
        assert pid in before, (pid, before)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        worker_killed.set()

    published: list[bool] = []

    def publish() -> None:
        wait_subscribed(redis_server, f"task:{task}")  # the stream is open: these go out live
        for seq in range(300):
            if seq == 150:  # half the task waits for the kill: it falls in mid-stream
                worker_killed.wait(60)
            published.append(publisher.publish(task, "tick", {"seq": seq}))
        published.append(publisher.publish_completed(task))
        published.append(publisher.flush(10))

    publishing = threading.Thread(target=publish)
    publishing.start()
    try:
        events, connections = read_resuming(events_url(gateway, task), kill_its_worker, 60)
    finally:
        worker_killed.set()  # the publisher goes on even if no kill came
        publishing.join(60)
    assert 302 == len(published) and all(published)  # 300 ticks, completed, flush
    assert 1 == len(killed)
    assert connections >= 2
    received = decoded(events)
    assert list(range(300)) == [e["data"]["seq"] for e in received[:-1]]
    assert "completed" == received[-1]["type"]

    def replaced() -> bool:
        workers = gateway.listening_pids()
        return 2 == len(workers) and killed[0] not in workers

    wait_until(replaced, 60)
    assert 1 == len(set(gateway.worker_pids()) - set(before))  # one new, the other kept


def test_the_workers_flag_overrides_the_config_key_and_0_means_one_per_core() -> None:
    """--workers N wins over [gateway] workers, absent it the key counts; 0 from either is
    os.cpu_count()."""
    cores = os.cpu_count()
    assert 3 == worker_count(GatewayConfig(workers=5), 3)
    assert 5 == worker_count(GatewayConfig(workers=5), None)
    assert 1 == worker_count(GatewayConfig(workers=5), 1)
    assert cores == worker_count(GatewayConfig(workers=5), 0)
    assert cores == worker_count(GatewayConfig(workers=0), None)
    assert cores == worker_count(GatewayConfig(), None)  # the default is 0
