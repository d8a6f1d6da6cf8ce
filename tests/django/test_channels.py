"""notifier.channels against real Channels consumers: the test Django site
(tests/apps/django_site) on uvicorn, a consumer joined to a group, read by a real WebSocket
client, on both channels_redis layers; messages from a thread, from inside running loops, from a
forked child and from a recycled prefork child's ``except`` block; a Redis restart in
mid-stream. And the site's page in a real Chromium, through the token view and the gateway
mounted in the site's ASGI application (the same server and worker)."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import notifier
from notifier import InvalidEvent, Notifier
from notifier.testing import RedisServer
from tasks.launcher import WorkerProcess, client

from support.django_site import (
    PASSWORD,
    USER,
    Reader,
    SiteServer,
    make_database,
    setup_here,
    site_env,
)
from support.helpers import assert_invariant

pytestmark = pytest.mark.timeout(90)
LAYERS = ["default", "pubsub"]  # channels_redis.core's and channels_redis.pubsub's
PER_SOURCE = 300


@pytest.fixture(scope="module")
def here(redis_server: RedisServer) -> Iterator[None]:
    """Django set up in this process; its default notifier put back as it was afterwards."""
    setup_here(redis_server.url)
    yield
    notifier.configure(None)


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, here: None) -> Iterator[WorkerProcess]:
    """The site's Celery worker: prefork, each child recycled after one task."""
    env = site_env(redis_server.url)
    process = WorkerProcess(env, app="apps.django_site.worker", max_tasks_per_child=1)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def site(
    redis_server: RedisServer, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SiteServer]:
    workdir = tmp_path_factory.mktemp("site")
    env = site_env(
        redis_server.url, TEST_SITE_QUEUE=worker.queue, TEST_DJANGO_DB=str(workdir / "db.sqlite3")
    )
    make_database(env)
    with SiteServer(env, workdir / "uvicorn.log") as server:
        yield server


@pytest.fixture
def own(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url)


def numbered(first: int, count: int) -> list[dict[str, Any]]:
    return [{"type": "relay", "n": n} for n in range(first, first + count)]


@pytest.mark.parametrize("alias", LAYERS)
def test_every_message_from_every_kind_of_caller_reaches_the_consumer(
    alias: str, site: SiteServer, worker: WorkerProcess, redis_server: RedisServer, own: Notifier
) -> None:
    """300 messages each from a thread, from inside two asyncio.run loops in a row, from a
    forked child and from recycled prefork children sending in an except block: every one is
    received by the consumer over its WebSocket, on each channels_redis layer."""
    from notifier import channels

    group = f"g-{alias}-{uuid.uuid4().hex[:8]}"
    with Reader(site, alias, group) as reader:
        # A thread.
        accepted: list[bool] = []
        sender = threading.Thread(
            target=lambda: accepted.extend(
                channels.group_send(group, m, layer=alias, notifier=own)
                for m in numbered(0, PER_SOURCE)
            )
        )
        sender.start()
        sender.join(10)

        # Code inside a running loop, twice: a loop of its own each time.
        async def from_a_loop(first: int) -> list[bool]:
            return [
                channels.group_send(group, m, layer=alias, notifier=own)
                for m in numbered(first, PER_SOURCE // 2)
            ]

        accepted += asyncio.run(from_a_loop(PER_SOURCE))
        accepted += asyncio.run(from_a_loop(PER_SOURCE + PER_SOURCE // 2))

        # A forked child: its own notifier thread and layer; it exits once they are flushed.
        pid = os.fork()
        if pid == 0:
            ok = all(
                channels.group_send(group, m, layer=alias, notifier=own)
                for m in numbered(2 * PER_SOURCE, PER_SOURCE)
            )
            os._exit(0 if ok and own.flush(20) else 1)
        assert (pid, 0) == os.waitpid(pid, 0)

        # Prefork children recycled after each task, sending from an except block.
        app = client(redis_server.url)
        try:
            results = [
                app.send_task(
                    "site.burst",
                    args=[group, alias, 3 * PER_SOURCE + 100 * i, 100],
                    queue=worker.queue,
                )
                for i in range(PER_SOURCE // 100)
            ]
            assert [100] * (PER_SOURCE // 100) == [r.get(timeout=30) for r in results]
            del results
        finally:
            app.close()

        assert [True] * (2 * PER_SOURCE) == accepted
        assert own.flush(20)
        reader.wait_for(set(range(4 * PER_SOURCE)))
    stats = own.stats()
    assert (2 * PER_SOURCE, 2 * PER_SOURCE) == (stats["accepted"], stats["published"])


@pytest.mark.parametrize("alias", LAYERS)
def test_send_reaches_one_consumers_channel(alias: str, site: SiteServer, own: Notifier) -> None:
    """send() to a consumer's channel name reaches that consumer alone."""
    from notifier import channels

    group = f"one-{uuid.uuid4().hex[:8]}"
    with Reader(site, alias, group) as reader, Reader(site, alias, group) as other:
        assert all(
            channels.send(reader.channel, m, layer=alias, notifier=own) for m in numbered(0, 20)
        )
        assert own.flush(10)
        reader.wait_for(set(range(20)))
        assert channels.group_send(group, {"type": "relay", "n": -1}, layer=alias, notifier=own)
        other.wait_for({-1})  # what came before it to the group, the other one would have seen
        assert [-1] == other.received


def test_bad_messages_are_refused_at_the_call_site(here: None, own: Notifier) -> None:
    """A name Channels refuses, a message that is no dict, has no str type, or cannot be
    encoded, and an unknown layer alias each raise at the call, naming what is wrong."""
    from notifier import ConfigError, channels

    cases: list[tuple[Callable[[], bool], str]] = [
        (lambda: channels.group_send("no spaces", {"type": "a"}, notifier=own), "Group name"),
        (lambda: channels.send("bad/channel", {"type": "a"}, notifier=own), "Channel name"),
        (lambda: channels.group_send("g", ["type"], notifier=own), "is a dict, got list"),  # type: ignore[arg-type]
        (lambda: channels.group_send("g", {"kind": "a"}, notifier=own), "needs a str 'type'"),
        (lambda: channels.group_send("g", {"type": "a", "x": {1, 2}}, notifier=own), "msgpack"),
    ]
    for call, words in cases:
        with pytest.raises(InvalidEvent, match=words):
            call()
    with pytest.raises(ConfigError, match="no layer 'nope'"):
        channels.group_send("g", {"type": "a"}, layer="nope", notifier=own)
    assert 0 == own.stats()["accepted"]


def test_a_message_changed_after_the_call_is_sent_as_it_was(
    site: SiteServer, own: Notifier
) -> None:
    """The call site keeps a copy: what the caller changes in the dict afterwards is not sent."""
    from notifier import channels

    group = f"copy-{uuid.uuid4().hex[:8]}"
    with Reader(site, "default", group) as reader:
        message: dict[str, Any] = {"type": "relay", "n": 1}
        assert channels.group_send(group, message, notifier=own)
        message["n"] = 2
        assert own.flush(10)
        reader.wait_for({1})
        assert [1] == reader.received


@pytest.mark.parametrize("alias", LAYERS)
def test_a_redis_restart_in_mid_stream_raises_nothing_and_loses_nothing_stored(
    alias: str,
    here: None,
    redis_factory: Callable[..., RedisServer],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Redis killed and started again while messages flow: every call returns True without
    raising, the messages held up are sent again once it is back, and every one is counted. On
    the core layer, whose messages Redis stores (append-only file here), every one is there."""
    from django.test import override_settings

    from notifier import channels

    redis = redis_factory(extra=["--appendonly", "yes", "--appendfsync", "always"])
    own = notifier_factory(redis.url)
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis.url], "capacity": 1000},
        },
        "pubsub": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis.url]},
        },
    }
    group, reader = f"restart-{alias}", "restart-reader"
    with override_settings(CHANNEL_LAYERS=layers):
        if alias == "default":
            asyncio.run(_join(alias, group, reader))
        accepted = [
            channels.group_send(group, m, layer=alias, notifier=own) for m in numbered(0, 150)
        ]
        assert own.flush(10)
        redis.kill()
        accepted += [
            channels.group_send(group, m, layer=alias, notifier=own) for m in numbered(150, 150)
        ]
        redis.start()
        assert own.flush(20)
        stats = own.stats()
        assert_invariant(stats)
        assert [True] * 300 == accepted
        assert (300, 300) == (stats["accepted"], stats["published"])
        if alias == "default":
            assert set(range(300)) == asyncio.run(_drain(alias, reader))


async def _join(alias: str, group: str, channel: str) -> None:
    from channels.layers import channel_layers

    layer = channel_layers.make_backend(alias)
    await layer.group_add(group, channel)
    await layer.close_pools()


async def _drain(alias: str, channel: str) -> set[int]:
    """What the channel holds, read through the layer's own receive()."""
    from channels.layers import channel_layers

    layer = channel_layers.make_backend(alias)
    found: set[int] = set()
    try:
        while True:
            try:
                async with asyncio.timeout(1.0):
                    found.add((await layer.receive(channel))["n"])
            except TimeoutError:
                return found
    finally:
        await layer.close_pools()


def test_the_page_follows_a_task_it_started_through_the_mounted_gateway(
    page: Any, site: SiteServer
) -> None:
    """A user logs in, starts a task on the watch page, and the page follows it to completed
    through the token view and the gateway under the site's own origin."""
    page.goto(site.url("/login/?next=/watch/"))
    page.fill("#id_username", USER)
    page.fill("#id_password", PASSWORD)
    page.click("#login")
    page.wait_for_url(site.url("/watch/"))
    page.click("#start")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'completed'", timeout=30_000
    )
    assert page.inner_text("#task").startswith("page-")
    assert "100" == page.get_attribute("#bar", "value")
    assert "step 5" == page.inner_text("#message")


def test_the_token_view_refuses_a_visitor_who_is_not_logged_in(site: SiteServer) -> None:
    """Without a session, GET token/<task_id> is a 403 and carries no token."""
    import httpx

    answer = httpx.get(site.url("/notifications/token/some-task"))
    assert 403 == answer.status_code
    assert "token" not in answer.json()
