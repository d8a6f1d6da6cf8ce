"""The gateway and its Redis: what it says when Redis is not there (at start, at each outage and
its end), how soon a waiting client is refused, and that tasks coming and going leave nothing
behind in its memory.

Real redis-servers; the gateway as a real process, or in this process (uvicorn on a thread)
where the test reads the hub's own structures and this process's traced memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from notifier import Notifier, events, load_config
from notifier.gateway import create_app, issue_token
from notifier.gateway.app import Gateway
from notifier.gateway.subscription import OPEN_PATIENCE
from notifier.testing import RedisServer, free_port, wait_until

from support.gateway import HISTORY, SECRET, GatewayProcess, get_json, sse_events
from support.helpers import make_config, new_task

pytestmark = pytest.mark.timeout(120)

# Seconds a refused client may take beyond OPEN_PATIENCE: generous, and short of the 4 s that an
# attempt started just before the deadline may wait for its subscription at connect_timeout =
# 2.0 (2 * connect_timeout): the deadline must cut that attempt short.
REFUSAL_MARGIN = 2.0


def events_url(gateway: GatewayProcess, task: str) -> str:
    return gateway.url(f"/tasks/{task}/events?token={issue_token(task, config=gateway.config)}")


# A Redis that is not there ----------------------------------------------------------------------


def test_a_gateway_without_redis_says_so_logs_the_outage_once_and_its_end(
    tmp_path: Path,
    redis_factory: Callable[..., RedisServer],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Started where no Redis listens: one line at start saying so and what it does; three
    clients each get 503 with the reason, and the log has one warning for the outage, not one
    per client; once Redis starts on that port, one line says it is back, and a stream is
    served."""
    port = free_port()
    with GatewayProcess(f"redis://127.0.0.1:{port}/0", tmp_path) as gateway:
        assert "Redis does not answer" in gateway.output(), gateway.output()
        assert "serving anyway" in gateway.output(), gateway.output()
        refusals: list[tuple[int, Any]] = []
        clients = [
            threading.Thread(target=lambda t=t: refusals.append(get_json(events_url(gateway, t))))
            for t in (new_task("down") for _ in range(3))
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
        assert [(503, {"error": "Redis is unavailable"})] * 3 == refusals
        log = gateway.output()
        assert 1 == log.count("gateway_redis_unavailable"), log
        assert 0 == log.count("gateway_open_retrying"), log  # per client: debug

        redis = redis_factory(port=port)
        wait_until(lambda: "gateway_redis_available" in gateway.output(), 30)
        publisher = notifier_factory(redis.url, history=HISTORY)
        task = new_task("back")
        assert publisher.publish_completed(task)
        assert publisher.flush(10)
        status, events = sse_events(events_url(gateway, task))
        assert (200, "completed") == (status, events[-1].event)
        assert 1 == gateway.output().count("gateway_redis_available"), gateway.output()
    gateway.assert_clean_log()


def test_a_client_is_refused_once_open_patience_is_over_not_after_a_last_attempt(
    tmp_path: Path,
) -> None:
    """connect_timeout = 2.0 (the default), so each attempt to open may wait 4 s for its
    subscription: a client still gets its 503 within OPEN_PATIENCE (plus a margin), never
    before, because the deadline cuts short the attempt in flight."""
    gateway = GatewayProcess(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    toml = gateway.config_path.read_text()
    gateway.config_path.write_text(toml.replace("connect_timeout = 1.0", "connect_timeout = 2.0"))
    gateway.config = load_config(gateway.config_path).with_env(gateway.env)
    assert 2.0 == gateway.config.redis.connect_timeout
    with gateway:
        url = events_url(gateway, new_task("patience"))
        started = time.monotonic()
        status, _ = get_json(url)
        waited = time.monotonic() - started
    assert 503 == status
    assert OPEN_PATIENCE <= waited < OPEN_PATIENCE + REFUSAL_MARGIN, waited
    gateway.assert_clean_log()


# Tasks come and go: nothing stays -------------------------------------------------------------

# Streams per batch, and how many are open at once.
DISTINCT_TASKS = 1500
AT_ONCE = 50
# Bytes of traced memory a batch may add per task id. A leak of one small entry per channel (a
# set entry and the channel's name: some 45 B as traced here, 170 B while the set's table
# doubles) is well above it; a batch without a leak moves the total by a few KB either way.
PER_TASK_SLACK = 23.0


class InProcessGateway:
    """``create_app(config)`` served by uvicorn on a thread of this process, so that the test
    sees its hub and its memory."""

    def __init__(self, redis_url: str) -> None:
        self.config = make_config(
            redis_url,
            history=HISTORY,
            gateway={"secret": SECRET, "max_connections_per_client": 10 * AT_ONCE},
        )
        self.app = create_app(self.config)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="gateway")

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    def start(self) -> InProcessGateway:
        self.thread.start()
        wait_until(lambda: self.server.started, 30)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def per_task(self) -> dict[str, int]:
        """Every structure of the gateway and its server that holds something per task or per
        stream (read from the test's thread: lengths only, which do not race the server's)."""
        hub, door = self.gateway.hub, self.gateway.door
        shards = list(hub._shards.values())
        return {
            "open streams": door.open_streams,
            "clients": len(door._by_client),
            "feeds": len(hub._feeds),
            "shard feeds": sum(len(shard.feeds) for shard in shards),
            "unanswered unsubscribes": sum(len(shard._leaving) for shard in shards),
            # uvicorn's own: a connection the client closed is let go a moment later, and
            # under load some of the last batch's were still held when memory was read.
            "server connections": len(self.server.server_state.connections),
            "server tasks": len(self.server.server_state.tasks),
        }


@pytest.fixture
def in_process_gateway(redis_server: RedisServer) -> Iterator[InProcessGateway]:
    served = InProcessGateway(redis_server.url).start()
    yield served
    served.stop()


async def _open_and_close(port: int, tasks: list[str], tokens: dict[str, str]) -> None:
    """One SSE stream per task, AT_ONCE at a time, each closed by the client once the gateway
    has answered it (its subscription confirmed, its history read)."""
    slots = asyncio.Semaphore(AT_ONCE)

    async def one(task: str) -> None:
        async with slots:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    f"GET /tasks/{task}/events?token={tokens[task]} HTTP/1.1\r\n"
                    "Host: gateway\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"retry: ")
                assert head.startswith(b"HTTP/1.1 200"), head
            finally:
                writer.close()
                await writer.wait_closed()

    await asyncio.gather(*(one(task) for task in tasks))


def _come_and_go(served: InProcessGateway, prefix: str, count: int) -> None:
    """``count`` distinct tasks' streams opened and closed; returns once the gateway has let
    each of them go and Redis has answered every unsubscribe (checked with a deadline)."""
    tasks = [f"{prefix}-{i}" for i in range(count)]
    tokens = {task: issue_token(task, config=served.config) for task in tasks}
    asyncio.run(_open_and_close(served.port, tasks, tokens))
    nothing = dict.fromkeys(served.per_task(), 0)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: nothing == served.per_task(), 30)
    assert nothing == served.per_task()


def _traced_after(come_and_go: Callable[[], None]) -> int:
    come_and_go()
    # The ids check_task_id has validated are a cache bounded at a few thousand, which a batch
    # fills further or empties depending on where it stands: emptied here, it never counts.
    events._valid_task_ids.clear()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_thousands_of_distinct_tasks_coming_and_going_leave_nothing_behind(
    in_process_gateway: InProcessGateway,
) -> None:
    """On a single node (Sentinel's replies are the same): after 1,500 distinct tasks' streams
    open and close, the hub, its pub/sub connection and the front door hold nothing for any of
    them, and further batches of 1,500 leave this process's traced memory where the first left
    it. A leak grows the total by every batch; a one-off (a table of the server's or the
    runtime's doubling once: 61 and 70 KB, seen in two clean-clone CI runs) grows it by one
    only: of the two batches after the first, the smaller growth must stay within the slack."""
    served, run = in_process_gateway, new_task("churn")
    _come_and_go(served, f"{run}-warm", AT_ONCE)  # imports, pools and caches filled first
    tracemalloc.start()
    try:
        first = _traced_after(lambda: _come_and_go(served, f"{run}-a", DISTINCT_TASKS))
        second = _traced_after(lambda: _come_and_go(served, f"{run}-b", DISTINCT_TASKS))
        third = _traced_after(lambda: _come_and_go(served, f"{run}-c", DISTINCT_TASKS))
    finally:
        tracemalloc.stop()
    growth = min(second - first, third - second)
    assert growth < DISTINCT_TASKS * PER_TASK_SLACK, (first, second, third)
