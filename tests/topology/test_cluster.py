"""Redis Cluster, on a real cluster the tests start (three masters, three replicas): events
spread over the masters by slot with SPUBLISH, survive failovers and a slot moving in
mid-stream, and the consumer side (subscribe, last_event, listen, the gateway) follows them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.crc import key_slot

from notifier import Notifier, NotifierConfig
from notifier.consumer import last_event
from notifier.gateway import issue_token
from notifier.testing import RedisServer, wait_until

from support.faults import NEVER_WAITS, LiveSubscriber, PacedPublisher, report
from support.gateway import GatewayProcess, decoded, sse_events
from support.health import health_config, request, serving
from support.helpers import assert_invariant, listener, make_config
from support.topologies import ClusterSet

pytestmark = pytest.mark.timeout(240)
HISTORY = {"enabled": True, "maxlen": 100_000, "ttl_seconds": 600}
RATE = 2000.0
TASKS = [f"cluster-{i}" for i in range(24)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSet]:
    """One cluster for the tests that leave it whole; the failover tests start their own."""
    with ClusterSet() as topology:
        yield topology


@pytest.fixture
def own_cluster() -> Iterator[ClusterSet]:
    with ClusterSet() as topology:
        yield topology


def config_for(topology: ClusterSet) -> NotifierConfig:
    return make_config(topology.url(), history=HISTORY)


def history_key(task_id: str) -> str:
    return f"task-history:{{{task_id}}}"


def history_ids(topology: ClusterSet, task_id: str) -> list[str]:
    """The event ids in the task's history stream, on the master that owns its slot now."""
    with topology.owner_of(history_key(task_id).encode()).client() as client:
        entries = client.xrange(history_key(task_id))
    return [json.loads(fields[b"event"])["event_id"] for _, fields in entries]


def commandstats(server: RedisServer) -> dict[str, int]:
    with server.client() as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def stream_through(
    n: Notifier, fault: Callable[[], None], total: int = 8000, tasks: list[str] = TASKS
) -> PacedPublisher:
    """Publish ``total`` ticks over ``tasks`` at RATE while ``fault`` runs in mid-stream."""
    pacer = PacedPublisher(
        lambda i: n.publish(tasks[i % len(tasks)], "tick", {"seq": i}), total, RATE
    ).start()
    pacer.wait_calls(total // 4)
    fault()
    pacer.join(120)
    assert n.flush(90)
    return pacer


def check_every_event_stored(
    topology: ClusterSet, n: Notifier, pacer: PacedPublisher, tasks: list[str] = TASKS
) -> dict[str, Any]:
    """By event id: every accepted event is in its task's history, on its slot's master now."""
    stats = n.stats()
    assert [] == pacer.errors
    assert pacer.total == stats["accepted"] == stats["published"], stats
    assert_invariant(stats)
    stored = {event_id for task in tasks for event_id in history_ids(topology, task)}
    assert pacer.total == len(stored), (pacer.total, len(stored))
    assert pacer.worst() < NEVER_WAITS
    return {"events": pacer.total, "stored": len(stored), "resent": stats["resent"]}


def test_task_ids_spread_over_every_master_with_spublish_and_no_publish(
    cluster: ClusterSet,
) -> None:
    """1,000 task ids: each master took a share by SPUBLISH, no node saw a PUBLISH, and
    stats(), /health and /metrics count the publishes per master."""
    before = {s.port: commandstats(s) for s in cluster.servers}
    config = health_config(cluster.url(), history=HISTORY)
    with serving(config) as (n, server):
        for i in range(1000):
            assert n.publish(f"spread-{i}", "tick", {"seq": i})
        assert n.flush(30)
        stats = n.stats()
        nodes = stats["redis"]["nodes"]
        # The endpoint serves the snapshot of the last heartbeat: wait for one after the flush.
        wait_until(lambda: 1000 == node_published(server.url), 10)
    assert 1000 == stats["published"] and 3 == stats["redis"]["masters"]
    spublished = {}
    for s in cluster.servers:
        after = commandstats(s)
        assert 0 == after.get("publish", 0) - before[s.port].get("publish", 0), s.port
        spublished[s.port] = after.get("spublish", 0) - before[s.port].get("spublish", 0)
    masters = {m.port for m in cluster.masters()}
    assert all(spublished[port] > 0 for port in masters), spublished
    assert 1000 == sum(spublished.values())
    assert {f"127.0.0.1:{p}": spublished[p] for p in masters} == {
        node: figures["published"] for node, figures in nodes.items()
    }
    report("cluster_spread", spublish_per_master=sorted(spublished[p] for p in masters))


def node_published(base_url: str) -> float:
    """The sum of notifier_node_published_total over the masters, as /metrics says."""
    text = request(base_url + "/metrics")[1].decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "notifier_node_published"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def test_a_late_subscriber_replays_a_task_from_the_cluster_and_ends_at_its_terminal_event(
    cluster: ClusterSet, tmp_path: Path
) -> None:
    """subscribe() after the task ended, last_event(), the gateway's replay and `notifier
    listen` for a task that is still going, all on the cluster."""
    config = config_for(cluster)
    task_id = "cluster-late"
    with Notifier(config) as n:
        for i in range(50):
            assert n.publish(task_id, "progress", {"done": i, "total": 50})
        assert n.publish_completed(task_id, {"ok": True})
        assert n.flush(30)

    async def replay() -> list[dict[str, Any]]:
        from notifier.consumer import subscribe

        return [e async for e in subscribe(task_id, config=config, replay=True)]

    events = asyncio.run(asyncio.wait_for(replay(), 60))
    assert "completed" == events[-1]["type"]
    assert len(history_ids(cluster, task_id)) == len(events)
    latest = asyncio.run(last_event(task_id, config=config))
    assert latest is not None and latest["event_id"] == events[-1]["event_id"]
    with GatewayProcess(cluster.url(), tmp_path) as gateway:
        token = issue_token(task_id, config=gateway.config)
        status, sse = sse_events(gateway.url(f"/tasks/{task_id}/events?token={token}"))
        assert 200 == status
        assert [e["event_id"] for e in events] == [e["event_id"] for e in decoded(sse)]


def test_listen_follows_a_task_on_the_cluster_and_refuses_all(
    cluster: ClusterSet, tmp_path: Path
) -> None:
    """`notifier listen TASK_ID` SSUBSCRIBEs where the task's slot lives; `listen --all` says
    that a cluster has no pattern subscriptions."""
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[redis]\nurl = "{cluster.url()}"\n')
    refused = listener(config_file, "--all")
    _, said = refused.communicate(timeout=60)
    assert 0 != refused.returncode
    assert "sharded channels have no patterns" in said
    assert "Traceback" not in said
    task_id = "cluster-listen"
    process = listener(config_file, task_id, "--count", "3", "--timeout", "60")
    try:
        owner = cluster.owner_of(history_key(task_id).encode())
        channel = f"task:{{{task_id}}}"

        def subscribed() -> bool:
            with owner.client() as client:
                reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
            return int(reply[1]) >= 1

        wait_until(subscribed, 30)
        with Notifier(config_for(cluster)) as n:
            for i in range(3):
                assert n.publish(task_id, "tick", {"seq": i})
            assert n.flush(30)
        out, err = process.communicate(timeout=60)
        assert 0 == process.returncode, err
        assert [0, 1, 2] == [json.loads(line)["data"]["seq"] for line in out.splitlines()]
    finally:
        process.kill()
        process.wait()


def test_a_slot_moved_in_mid_stream_loses_nothing_and_subscribers_see_no_gap(
    own_cluster: ClusterSet, tmp_path: Path
) -> None:
    """The slot of a task is migrated to another master (IMPORTING, MIGRATING, MIGRATE, SETSLOT
    NODE) while events flow at ~2,000/s: every event is stored, and a live subscribe() and a
    gateway SSE stream on that task, both moved by the node's sunsubscribe, miss none."""
    config = config_for(own_cluster)
    task_id = "cluster-moving"
    slot = key_slot(history_key(task_id).encode())
    source = own_cluster.owner_of_slot(slot)
    target = next(m for m in own_cluster.masters() if m is not source)
    live = LiveSubscriber(config, task_id)
    gateway = GatewayProcess(own_cluster.url(), tmp_path).start()
    received: list[Any] = []
    n = Notifier(config)
    try:
        token = issue_token(task_id, config=gateway.config)
        reader = threading.Thread(
            target=lambda: received.extend(
                sse_events(gateway.url(f"/tasks/{task_id}/events?token={token}"), timeout=120)[1]
            )
        )
        reader.start()

        def subscribed() -> bool:
            with source.client() as client:
                reply = client.execute_command("PUBSUB", "SHARDNUMSUB", f"task:{{{task_id}}}")
            return int(reply[1]) >= 2  # the live subscriber and the gateway

        wait_until(subscribed, 30)
        n.start()
        tasks = [task_id, *TASKS[:5]]
        pacer = stream_through(n, lambda: own_cluster.migrate_slot(slot, target), tasks=tasks)
        assert own_cluster.owner_of_slot(slot) is target
        figures = check_every_event_stored(own_cluster, n, pacer, tasks)
        assert n.publish_completed(task_id)
        assert n.flush(30)
        stored = history_ids(own_cluster, task_id)
        wait_until(lambda: set(stored) <= set(live.ids), 30)
        reader.join(120)
        assert set(stored) == {e["event_id"] for e in decoded(received)}
        assert "completed" == decoded(received)[-1]["type"]
        report(
            "cluster_reshard",
            **figures,
            moved_task_events=len(set(stored)),
            live_received=len(set(live.ids)),
            sse_received=len(decoded(received)),
            refreshes=n.stats()["redis"]["failovers"],
        )
    finally:
        live.stop()
        gateway.stop()
        n.close(timeout=5)


def test_a_cluster_failover_in_mid_stream_loses_no_event(own_cluster: ClusterSet) -> None:
    """CLUSTER FAILOVER on a master's replica while events flow at ~2,000/s: every accepted
    event ends up in its task's history, and no call waits on it."""
    config = config_for(own_cluster)
    old = own_cluster.owner_of(history_key(TASKS[0]).encode())
    replica = own_cluster.replica_of(old)
    live = LiveSubscriber(config, TASKS[0])
    with Notifier(config) as n:

        def fault() -> None:
            with replica.client(socket_timeout=5) as client:
                client.execute_command("CLUSTER", "FAILOVER")
            wait_until(lambda: own_cluster.owner_of(history_key(TASKS[0]).encode()) is replica, 30)

        pacer = stream_through(n, fault)
        figures = check_every_event_stored(own_cluster, n, pacer)
        stored = history_ids(own_cluster, TASKS[0])
        wait_until(lambda: set(stored) <= set(live.ids), 30)
        live.stop()
        report("cluster_failover", **figures, refreshes=n.stats()["redis"]["failovers"])


def test_a_master_killed_in_mid_stream_loses_no_event(own_cluster: ClusterSet) -> None:
    """SIGKILL of a master: its replica takes over after cluster-node-timeout (1 s here), and
    every accepted event ends up in its task's history on the new master."""
    config = config_for(own_cluster)
    old = own_cluster.owner_of(history_key(TASKS[0]).encode())
    replica = own_cluster.replica_of(old)
    with Notifier(config) as n:

        def fault() -> None:
            old.kill()
            wait_until(lambda: own_cluster.owner_of(history_key(TASKS[0]).encode()) is replica, 60)

        pacer = stream_through(n, fault)
        figures = check_every_event_stored(own_cluster, n, pacer)
        report("cluster_kill", **figures, refreshes=n.stats()["redis"]["failovers"])


def test_a_workflow_runs_its_script_on_the_master_that_owns_its_slot(
    cluster: ClusterSet, notifier_factory: Callable[..., Notifier]
) -> None:
    """A workflow's state, stream and SPUBLISH share its channel id's slot: its steps run there
    as one script each, and a subscriber on a cluster reads it to its terminal event."""
    from notifier.consumer import subscribe
    from notifier.events import encode_event
    from notifier.workflows.steps import declaration, member_step

    n = notifier_factory(cluster.url(), history=HISTORY)
    workflow, members = "cluster-workflow", [f"cluster-member-{i}" for i in range(3)]
    assert n.integration.publish_step(declaration(workflow, branch=members[0], size=3, seal=1))
    for event_type in ("started", "completed"):
        for task in members:
            data: dict[str, Any] = {"task": "t", "retries": 0} if event_type == "started" else {}
            payload = encode_event(task, event_type, data, 1 << 20)
            assert n.integration.publish_step(member_step(workflow, task, event_type, payload))
    assert n.flush(30)
    stats = n.stats()
    assert stats["published"] == stats["accepted"] == 7, stats

    async def collect() -> list[dict[str, Any]]:
        async with asyncio.timeout(30):
            return [e async for e in subscribe(workflow, config=n.config, workflow=True)]

    events = asyncio.run(collect())
    assert [e["type"] for e in events] == ["member"] * 6 + ["completed"]
    assert events[-1]["data"]["completed"] == 3
    key = f"task-history:{{workflow:{workflow}}}"
    with cluster.owner_of(key.encode()).client() as client:
        assert client.xlen(key) == 7 and client.exists(key + ":state")
