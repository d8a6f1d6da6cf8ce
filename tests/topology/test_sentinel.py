"""Redis Sentinel, on a real topology the tests start (a master, a replica, three sentinels):
the notifier follows every failover and loses no event, and so does the consumer side."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier import Notifier, NotifierConfig
from notifier.consumer import last_event
from notifier.gateway import issue_token
from notifier.testing import wait_until

from support.faults import NEVER_WAITS, LiveSubscriber, PacedPublisher, report
from support.gateway import GatewayProcess, sse_events, wait_subscribed
from support.health import health_config, health_report, serving
from support.helpers import assert_invariant, listener, make_config
from support.topologies import SentinelSet

pytestmark = pytest.mark.timeout(180)
HISTORY = {"enabled": True, "maxlen": 100_000, "ttl_seconds": 600}
RATE = 2000.0


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    """A topology of its own for each test: every test here fails the master over, kills it or
    stops sentinels, and the next would start from what that left (another master, a server
    still rejoining)."""
    with SentinelSet() as topology:
        yield topology


@pytest.fixture
def sentinel_config(sentinels: SentinelSet) -> NotifierConfig:
    """The notifier's configuration for the test's topology, with the history on."""
    return make_config(sentinels.url(), history=HISTORY)


@pytest.fixture
def notifier_for(
    sentinels: SentinelSet, notifier_factory: Callable[..., Notifier]
) -> Callable[[], Notifier]:
    """Notifiers on the test's topology with the history on, started and connected to its
    master; notifier_factory closes them after the test."""

    def make() -> Notifier:
        n = notifier_factory(sentinels.url(), history=HISTORY)
        n.start()
        wait_until(lambda: n.stats()["connected"], 10)
        return n

    return make


@pytest.fixture
def live_subscriber(
    sentinel_config: NotifierConfig,
) -> Iterator[Callable[..., LiveSubscriber]]:
    """Live subscribers to a task's channel, on the topology's configuration unless the test
    gives its own; stopped after the test (stopping one twice is harmless)."""
    made: list[LiveSubscriber] = []

    def make(task_id: str, config: NotifierConfig | None = None) -> LiveSubscriber:
        live = LiveSubscriber(config or sentinel_config, task_id)
        made.append(live)
        return live

    yield make
    for live in made:
        live.stop()


def history_ids(topology: SentinelSet, task_id: str) -> list[str]:
    """The event ids in the task's history stream on the master the sentinels name now."""
    with topology.server(topology.master_port()).client() as client:
        entries = client.xrange(f"task-history:{task_id}")
    return [json.loads(fields[b"event"])["event_id"] for _, fields in entries]


def stream_through(
    n: Notifier, task_id: str, fault: Callable[[], None], total: int = 8000
) -> PacedPublisher:
    """Publish ``total`` ticks at RATE while ``fault`` runs in mid-stream."""
    pacer = PacedPublisher(lambda i: n.publish(task_id, "tick", {"seq": i}), total, RATE).start()
    pacer.wait_calls(total // 4)
    fault()
    pacer.join(120)
    assert n.flush(60)
    return pacer


def check_every_event_arrived(
    topology: SentinelSet, n: Notifier, task_id: str, live: LiveSubscriber, total: int
) -> dict[str, Any]:
    """By event id: the new master's history holds every accepted event, and so did the live
    subscriber get them."""
    stored = history_ids(topology, task_id)
    stats = n.stats()
    assert total == stats["published"] == stats["accepted"], stats
    assert_invariant(stats)
    assert total == len(set(stored)), (total, len(set(stored)))
    try:
        wait_until(lambda: set(stored) <= set(live.ids), 30)
    except TimeoutError:
        missing = len(set(stored) - set(live.ids))
        raise AssertionError(f"the live subscriber misses {missing}: {live.errors}") from None
    return {"events": total, "in_history": len(set(stored)), "live": len(set(live.ids))}


def test_a_failover_in_mid_stream_loses_no_event_and_is_noticed_at_once(
    sentinels: SentinelSet,
    notifier_for: Callable[[], Notifier],
    live_subscriber: Callable[..., LiveSubscriber],
) -> None:
    """SENTINEL FAILOVER at ~2,000 events/s: every accepted event is in the new master's history
    and reached a live subscriber; the notifier moves to the new master moments after the
    sentinels name it, and no call waits on any of it."""
    task_id = "sentinel-failover"
    live = live_subscriber(task_id)
    old = sentinels.master_port()
    n = notifier_for()
    noticed: dict[str, float] = {}

    def fault() -> None:
        named_at = sentinels.failover()
        wait_until(lambda: n.stats()["redis"]["master"] != f"127.0.0.1:{old}", 30, 0.005)
        noticed["after_s"] = time.monotonic() - named_at

    pacer = stream_through(n, task_id, fault)
    assert [] == pacer.errors
    figures = check_every_event_arrived(sentinels, n, task_id, live, pacer.total)
    assert 1 == n.stats()["redis"]["failovers"]
    assert pacer.worst() < NEVER_WAITS
    report(
        "sentinel_failover",
        **figures,
        noticed_after_named_s=round(noticed["after_s"], 3),
        resent=n.stats()["resent"],
        worst_call_ms=round(pacer.worst() * 1000, 3),
    )


def test_the_master_killed_fails_over_and_loses_no_event(
    sentinels: SentinelSet,
    notifier_for: Callable[[], Notifier],
    live_subscriber: Callable[..., LiveSubscriber],
) -> None:
    """SIGKILL of the master: the sentinels fail over after down-after-milliseconds (1 s here),
    and every accepted event ends up in the new master's history and at the subscriber."""
    task_id = "sentinel-kill"
    live = live_subscriber(task_id)
    old = sentinels.master_port()
    n = notifier_for()

    def fault() -> None:
        sentinels.server(old).kill()
        wait_until(lambda: sentinels.master_port() != old, 60, 0.05)

    pacer = stream_through(n, task_id, fault)
    assert [] == pacer.errors
    figures = check_every_event_arrived(sentinels, n, task_id, live, pacer.total)
    report("sentinel_kill", **figures, resent=n.stats()["resent"])


def test_one_sentinel_down_changes_nothing(
    sentinels: SentinelSet,
    notifier_for: Callable[[], Notifier],
    live_subscriber: Callable[..., LiveSubscriber],
) -> None:
    """The first sentinel of the URL is down: discovery asks the next, and a failover is
    followed all the same."""
    sentinels.sentinels[0].kill()  # before the notifier and the subscriber discover the master
    task_id = "sentinel-one-down"
    live = live_subscriber(task_id)
    n = notifier_for()

    def fault() -> None:
        old = sentinels.master_port()
        with sentinels.sentinels[1].client(socket_timeout=5) as client:
            client.execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_until(lambda: sentinels.master_port() != old, 30, 0.01)

    pacer = stream_through(n, task_id, fault, total=4000)
    check_every_event_arrived(sentinels, n, task_id, live, pacer.total)


def test_with_every_sentinel_down_events_wait_in_the_queue_then_arrive(
    sentinels: SentinelSet, live_subscriber: Callable[..., LiveSubscriber]
) -> None:
    """No sentinel answers and the master's connection is gone: the notifier cannot find a
    master, says so (not connected, the reason, health 503 "redis unreachable"), buffers, and
    delivers all once they are back, to the history and to a live subscriber. With the
    sentinels up, health is 200 and names the master."""
    queue = {"maxsize": 1000, "progress_interval": 0.0}
    config = health_config(sentinels.url(), history=HISTORY, queue=queue)
    task_id = "sentinel-all-down"
    live = live_subscriber(task_id, config)
    with serving(config) as (n, server):
        wait_until(lambda: health_report(server.url)[0] == 200, 10)
        body = health_report(server.url)[1]["processes"][0]
        assert f"127.0.0.1:{sentinels.master.port}" == body["redis"]["master"]
        for sentinel in sentinels.sentinels:
            sentinel.kill()
        with sentinels.server(sentinels.master.port).client() as client:
            # Its connection gone, the notifier must rediscover the master, and cannot.
            client.client_kill_filter(_type="normal", skipme=True)
        for i in range(800):
            assert n.publish(task_id, "tick", {"seq": i})
        wait_until(lambda: not n.stats()["connected"], 10)
        stats = n.stats()
        assert "no sentinel named a master" in str(stats["last_error"])
        assert stats["pending"] > 0
        wait_until(lambda: health_report(server.url)[0] == 503, 10)
        reasons = health_report(server.url)[1]["reasons"]
        assert any("redis unreachable" in r and "no sentinel named" in r for r in reasons)
        refused = [n.publish(task_id, "tick", {"seq": 800 + i}) for i in range(800)]
        assert False in refused  # the queue holds maxsize (1,000), then refuses: bounded
        for sentinel in sentinels.sentinels:
            sentinel.start()
        assert n.flush(60)
        stats = n.stats()
        assert_invariant(stats)
        assert stats["published"] == stats["accepted"] and stats["connected"]
        check_every_event_arrived(sentinels, n, task_id, live, stats["accepted"])
        wait_until(lambda: health_report(server.url)[0] == 200, 10)
    live.stop()  # its errors are final once it has stopped
    assert [] == live.errors


def test_the_old_master_comes_back_as_a_replica(
    sentinels: SentinelSet,
    notifier_for: Callable[[], Notifier],
    live_subscriber: Callable[..., LiveSubscriber],
) -> None:
    """After a kill and a failover, the old master restarts on its port: the sentinels make it
    a replica of the new one, replication confirms batches again, and nothing is lost: not in
    the history, not at a live subscriber."""
    task_id = "sentinel-return"
    live = live_subscriber(task_id)
    n = notifier_for()
    old = sentinels.master_port()
    sentinels.server(old).kill()
    wait_until(lambda: sentinels.master_port() != old, 60, 0.05)
    for i in range(200):
        assert n.publish(task_id, "tick", {"seq": i})
    assert n.flush(30)
    returning = sentinels.server(old)
    returning.extra = []
    returning.start()

    def is_replica() -> bool:
        with returning.client(socket_timeout=1) as client:
            info = client.info("replication")
        return bool(info["role"] == "slave" and info.get("master_link_status") == "up")

    wait_until(is_replica, 60, 0.1)
    started = time.monotonic()
    for i in range(200, 400):
        assert n.publish(task_id, "tick", {"seq": i})
    assert n.flush(30)
    confirmed_in = time.monotonic() - started
    check_every_event_arrived(sentinels, n, task_id, live, 400)
    with returning.client() as client:  # the replica has them too
        wait_until(lambda: client.xlen(f"task-history:{task_id}") == 400, 30)
    report("sentinel_old_master_back", flush_with_replica_s=round(confirmed_in, 3))


def test_last_event_listen_and_the_gateway_follow_a_failover(
    sentinels: SentinelSet,
    sentinel_config: NotifierConfig,
    notifier_for: Callable[[], Notifier],
    tmp_path: Path,
) -> None:
    """last_event(), `notifier listen` and the gateway's SSE stream, each across a failover."""
    n = notifier_for()
    task_id = "sentinel-consumers"
    url_file = tmp_path / "config.toml"
    url_file.write_text(f'[redis]\nurl = "{sentinels.url()}"\nconnect_timeout = 1.0\n')
    process = listener(url_file, task_id, "--count", "2", "--timeout", "90")
    gateway = GatewayProcess(sentinels.url(), tmp_path).start()
    received: list[Any] = []
    try:
        token = issue_token(task_id, config=gateway.config)
        reader = threading.Thread(
            target=lambda: received.extend(
                sse_events(gateway.url(f"/tasks/{task_id}/events?token={token}"), timeout=90)[1]
            )
        )
        reader.start()
        # The listener and the gateway, on the master.
        wait_subscribed(sentinels.server(sentinels.master_port()), f"task:{task_id}", 2)
        assert n.publish(task_id, "tick", {"seq": 1})
        assert n.flush(10)
        sentinels.failover()
        # `listen` keeps nothing published while it reconnects (pub/sub keeps nothing): what
        # it must show is that it follows the master, so both readers are back there first.
        wait_subscribed(sentinels.server(sentinels.master_port()), f"task:{task_id}", 2)
        assert n.publish(task_id, "tick", {"seq": 2})
        assert n.publish_completed(task_id)
        assert n.flush(30)
        latest = asyncio.run(last_event(task_id, config=sentinel_config))
        assert latest is not None and "completed" == latest["type"]
        out, err = process.communicate(timeout=90)
        assert 0 == process.returncode, err
        assert [1, 2] == [json.loads(line)["data"]["seq"] for line in out.splitlines()]
        reader.join(90)
        seqs = [json.loads(e.data)["data"].get("seq") for e in received if e.data]
        assert [1, 2, None] == seqs
    finally:
        process.kill()
        gateway.stop()
