"""`make bench-topologies`: Sentinel and Cluster, on real topologies started here, side by side.

1. **Failover loss.** A plain redis-py Sentinel client (``master_for``, an XADD and a PUBLISH
   per event in one pipeline, an error counted and the event given up) and the notifier, each at
   ``--rate`` events/s through one ``SENTINEL FAILOVER`` on a fresh topology (a master, a
   replica, three sentinels). Counted by event id: what each believed written (its calls that
   returned; for the notifier, what it counted published) against what the new master's history
   holds once the old master has resynced as its replica.
2. **The cost of WAIT.** The notifier on one Sentinel topology with ``wait_for_replica`` on and
   off, alternately: flat-out throughput (``--events`` over 100 tasks, until flushed) and the
   delay from the publishing call to a subscriber on the master at a paced rate.
3. **Cluster against one Redis.** ``--events`` from each of 2 publishing processes, over many
   task ids, through one redis-server and through a 3-master cluster (each master with a
   replica; ``wait_for_replica`` on and off): events/s, and each node's Redis CPU per event
   (``INFO cpu`` before and after, over the events the node took).

Writes bench/results/topologies.md and .json.

    python -m bench.topologies [--rate 1000] [--events 100000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.sentinel import Sentinel

from notifier import Notifier, NotifierConfig
from notifier.config import HistoryConfig, QueueConfig, RedisConfig
from notifier.testing import RedisServer, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.topologies import SERVICE, ClusterSet, SentinelSet  # noqa: E402  (tests' own)

RESULTS = Path(__file__).resolve().parent / "results"
HISTORY = HistoryConfig(enabled=True, maxlen=1_000_000, ttl_seconds=3600)
STREAM = "task-history:{}"


def config(url: str, wait: bool = True) -> NotifierConfig:
    return NotifierConfig(
        redis=RedisConfig(url=url, wait_for_replica=wait),
        queue=QueueConfig(maxsize=200_000, progress_interval=0.0),
        history=HISTORY,
    )


def paced(rate: float, total: int, call: Any, at: int, fault: Any) -> None:
    """``call(i)`` for i < total at ``rate``/s (deadline pacing); ``fault()`` once, at call ``at``
    (on its own thread, so that the calls go on meanwhile)."""
    begin, faulting = time.monotonic(), None
    for i in range(total):
        if i == at:
            faulting = threading.Thread(target=fault)
            faulting.start()
        ahead = begin + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the offered load
        call(i)
    if faulting is not None:
        faulting.join()


def new_master_ids(topology: SentinelSet, task_id: str) -> set[str]:
    """Event ids in the task's stream on the master the sentinels name, once the other server
    replicates from it (so the old master's writes after the promotion are gone)."""
    port = topology.master_port()
    other = topology.replica if topology.master.port == port else topology.master

    def synced() -> bool:
        with other.client(socket_timeout=1) as client:
            info = client.info("replication")
        return bool(info["role"] == "slave" and info.get("master_link_status") == "up")

    wait_until(synced, 60, 0.1)
    with topology.server(port).client() as client:
        entries = client.xrange(STREAM.format(task_id))
    return {orjson.loads(fields[b"event"])["event_id"] for _, fields in entries}


def loss_plain(rate: float, total: int) -> dict[str, Any]:
    with SentinelSet() as topology:
        sentinel = Sentinel([("127.0.0.1", s.port) for s in topology.sentinels], socket_timeout=1)
        master = sentinel.master_for(SERVICE, socket_timeout=1)
        written: set[str] = set()
        errors = 0
        task_id = "plain"

        def call(i: int) -> None:
            nonlocal errors
            event_id = f"plain-{i}"
            payload = orjson.dumps({"event_id": event_id, "type": "tick", "data": {"seq": i}})
            try:
                pipe = master.pipeline(transaction=False)
                pipe.xadd(STREAM.format(task_id), {"event": payload})
                pipe.publish(f"task:{task_id}", payload)
                pipe.execute()
                written.add(event_id)
            except redis.RedisError:
                errors += 1

        paced(rate, total, call, total // 4, topology.failover)
        held = new_master_ids(topology, task_id)
        master.close()
        return {"written": len(written), "held": len(held & written), "errors": errors}


def loss_notifier(rate: float, total: int) -> dict[str, Any]:
    with SentinelSet() as topology:
        n = Notifier(config(topology.url()))
        n.start()
        task_id = "ours"

        def call(i: int) -> None:
            n.publish(task_id, "tick", {"seq": i})

        paced(rate, total, call, total // 4, topology.failover)
        assert n.flush(120), "the notifier did not drain"
        stats = n.stats()
        n.close()
        held = new_master_ids(topology, task_id)
        return {
            "written": stats["published"],
            "held": len(held),
            "errors": stats["dropped"],
            "resent": stats["resent"],
        }


def wait_cost(events: int, rate: float, seconds: float, runs: int) -> dict[str, Any]:
    """Throughput and publish-to-subscriber delay with WAIT on and off, alternately."""
    rows: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    with SentinelSet() as topology:
        for _ in range(runs):
            for label, wait in (("on", True), ("off", False)):
                rows[label].append(wait_run(topology, wait, events, rate, seconds))
    return {
        label: {key: statistics.median(r[key] for r in runs_) for key in runs_[0]}
        for label, runs_ in rows.items()
    }


def wait_run(
    topology: SentinelSet, wait: bool, events: int, rate: float, seconds: float
) -> dict[str, float]:
    n = Notifier(config(topology.url(), wait))
    n.start()
    try:
        wait_until(lambda: n.stats()["connected"], 10)
        began = time.perf_counter()
        for i in range(events):
            n.publish(f"load-{i % 100}", "tick", {"seq": i})
        assert n.flush(300)
        throughput = events / (time.perf_counter() - began)
        delays = delay_run(topology, n, rate, seconds)
        settles = settle_run(n, 300)
    finally:
        n.close()
    ordered, settled = sorted(delays), sorted(settles)
    return {
        "events_per_s": throughput,
        "delay_p50_ms": ordered[len(ordered) // 2] * 1000,
        "delay_p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
        "settle_p50_ms": settled[len(settled) // 2] * 1000,
        "settle_p99_ms": settled[int(len(settled) * 0.99)] * 1000,
    }


def settle_run(n: Notifier, count: int) -> list[float]:
    """Seconds from publishing one event to its counting as published (``flush`` returns):
    the round trip, and with WAIT, the replica's acknowledgement."""
    times = []
    for i in range(count):
        began = time.perf_counter()
        n.publish("settle", "tick", {"seq": i})
        assert n.flush(30)
        times.append(time.perf_counter() - began)
    return times


def delay_run(topology: SentinelSet, n: Notifier, rate: float, seconds: float) -> list[float]:
    """Seconds from each publishing call to its message at a subscriber on the master."""
    task_id = f"delay-{uuid.uuid4().hex[:8]}"
    delays: list[float] = []
    client = topology.server(topology.master_port()).client()
    pubsub = client.pubsub()
    pubsub.subscribe(f"task:{task_id}")
    wait_until(lambda: pubsub.get_message(timeout=0.1) is not None, 10)
    total = int(rate * seconds)
    done = threading.Event()

    def receive() -> None:
        while len(delays) < total and not done.is_set():
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                sent = orjson.loads(message["data"])["data"]["t"]
                delays.append(time.monotonic() - sent)

    reader = threading.Thread(target=receive)
    reader.start()
    paced(rate, total, lambda i: n.publish(task_id, "tick", {"t": time.monotonic()}), -1, None)
    reader.join(30)
    done.set()
    pubsub.close()
    client.close()
    return delays


# Cluster against one Redis -------------------------------------------------------------------


def publisher(url: str, wait: bool, events: int, prefix: str, go: Any, out: Any) -> None:
    """One publishing process: ``events`` over 1,000 task ids, flat out, until flushed."""
    import resource

    n = Notifier(config(url, wait))
    n.start()
    wait_until(lambda: n.stats()["connected"], 30)
    out.put("ready")
    go.wait()
    began = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(events):
        n.publish(f"{prefix}-{i % 1000}", "tick", {"seq": i})
    assert n.flush(600)
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    out.put({
        "elapsed": elapsed,
        "cpu": (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime),
        "published": n.stats()["published"],
    })  # fmt: skip
    n.close()


def redis_cpu(servers: list[RedisServer]) -> dict[int, tuple[float, int]]:
    """Per server: its CPU seconds so far, and the events it took (XADD calls)."""
    figures = {}
    for server in servers:
        with server.client() as client:
            cpu = client.info("cpu")
            calls = client.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0)
        figures[server.port] = (cpu["used_cpu_user"] + cpu["used_cpu_sys"], int(calls))
    return figures


def throughput_run(
    url: str, servers: list[RedisServer], wait: bool, events: int, processes: int
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    prefix = uuid.uuid4().hex[:6]
    workers = [
        ctx.Process(target=publisher, args=(url, wait, events, f"{prefix}{i}", go, out))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:  # each connected, and waits for the start
        assert "ready" == out.get(timeout=120)
    before = redis_cpu(servers)
    began = time.perf_counter()
    go.set()
    results = [out.get(timeout=900) for _ in workers]
    wall = time.perf_counter() - began
    after = redis_cpu(servers)
    for worker in workers:
        worker.join(60)
    nodes = {}
    for port, (cpu, calls) in after.items():
        took = calls - before[port][1]
        used = cpu - before[port][0]
        nodes[port] = {"events": took, "cpu_s": used}
    total = sum(r["published"] for r in results)
    return {
        "events": total,
        "events_per_s": total / wall,
        "publisher_cpu_us_per_event": sum(r["cpu"] for r in results) / total * 1e6,
        "nodes": nodes,
    }


def cluster_rows(events: int, runs: int) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {"single": [], "cluster": [], "cluster_no_wait": []}
    single = RedisServer().start()
    try:
        with ClusterSet() as cluster:
            for _ in range(runs):
                rows["single"].append(
                    throughput_run(single.url, [single], True, events, processes=2)
                )
                for label, wait in (("cluster", True), ("cluster_no_wait", False)):
                    rows[label].append(
                        throughput_run(cluster.url(), cluster.servers, wait, events, 2)
                    )
                    roles = {s.port: role_of(s) for s in cluster.servers}
                    rows[label][-1]["roles"] = roles
    finally:
        single.stop()
    return {label: summarise(runs_) for label, runs_ in rows.items()}


def role_of(server: RedisServer) -> str:
    with server.client() as client:
        return "master" if client.info("replication")["role"] == "master" else "replica"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs; Redis CPU per event for masters (over the events each took) and
    for replicas (over the events their master took)."""
    best = sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2]
    masters = [
        (node["cpu_s"], node["events"])
        for port, node in best["nodes"].items()
        if best.get("roles", {}).get(port, "master") == "master"
    ]
    replicas = [
        node["cpu_s"]
        for port, node in best["nodes"].items()
        if best.get("roles", {}).get(port) == "replica"
    ]
    events = sum(e for _, e in masters)
    return {
        "events_per_s": statistics.median(r["events_per_s"] for r in runs),
        "publisher_cpu_us_per_event": statistics.median(
            r["publisher_cpu_us_per_event"] for r in runs
        ),
        "master_cpu_us_per_event": sum(c for c, _ in masters) / events * 1e6,
        "replica_cpu_us_per_event": (sum(replicas) / events * 1e6) if replicas else 0.0,
        "events_per_master": sorted(e for _, e in masters),
    }


# Report --------------------------------------------------------------------------------------


def markdown(figures: dict[str, Any], args: argparse.Namespace) -> str:
    plain, ours = figures["loss"]["plain"], figures["loss"]["notifier"]
    wait = figures["wait"]
    lines = [
        f"# Sentinel and Cluster ({time.strftime('%Y-%m-%d')}, `python -m bench.topologies"
        f"{' --quick' if args.quick else ''}`)",
        "",
        f"## One SENTINEL FAILOVER at {args.rate:.0f} events/s",
        "",
        "| client | written (its count) | in the new master's history | lost |",
        "| --- | ---: | ---: | ---: |",
        f"| redis-py `master_for`, XADD+PUBLISH | {plain['written']:,} | {plain['held']:,} "
        f"| {plain['written'] - plain['held']:,} ({plain['errors']} calls raised) |",
        f"| notifier (WAIT 1 after each batch) | {ours['written']:,} | {ours['held']:,} "
        f"| {ours['written'] - ours['held']:,} ({ours['resent']} resent) |",
        "",
        f"## WAIT on and off (Sentinel, median of {args.runs})",
        "",
        "| wait_for_replica | events/s flat out | call to subscriber p50 | p99 "
        "| call to published (one event, flush) p50 | p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in ("on", "off"):
        row = wait[label]
        lines.append(
            f"| {label} | {row['events_per_s']:,.0f} | {row['delay_p50_ms']:.2f} ms "
            f"| {row['delay_p99_ms']:.2f} ms | {row['settle_p50_ms']:.2f} ms "
            f"| {row['settle_p99_ms']:.2f} ms |"
        )
    ratio = wait["on"]["events_per_s"] / wait["off"]["events_per_s"]
    lines += [
        "",
        f"Throughput with WAIT / without: {ratio:.2f}.",
        "",
        f"## 2 publishing processes, {args.events:,} events each (median of {args.runs})",
        "",
        "| target | events/s | publisher CPU/event | Redis CPU/event, masters | replicas "
        "| events per master |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    names = {
        "single": "one redis-server",
        "cluster": "3-master cluster, WAIT on",
        "cluster_no_wait": "3-master cluster, WAIT off",
    }
    for label, name in names.items():
        row = figures["cluster"][label]
        lines.append(
            f"| {name} | {row['events_per_s']:,.0f} | {row['publisher_cpu_us_per_event']:.1f} µs "
            f"| {row['master_cpu_us_per_event']:.1f} µs | {row['replica_cpu_us_per_event']:.1f} µs "
            f"| {', '.join(f'{e:,}' for e in row['events_per_master'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller counts, one run")
    args = parser.parse_args()
    if args.quick:
        args.events, args.runs = 20_000, 1
    total = int(args.rate * 6)
    figures: dict[str, Any] = {"args": vars(args)}
    print("failover loss: plain client ...", flush=True)
    figures["loss"] = {"plain": loss_plain(args.rate, total)}
    print("failover loss: notifier ...", flush=True)
    figures["loss"]["notifier"] = loss_notifier(args.rate, total)
    print("WAIT on/off ...", flush=True)
    figures["wait"] = wait_cost(args.events // 2, 500.0, 10.0, args.runs)
    print("cluster against one Redis ...", flush=True)
    figures["cluster"] = cluster_rows(args.events, args.runs)
    RESULTS.mkdir(exist_ok=True)
    text = markdown(figures, args)
    (RESULTS / "topologies.md").write_text(text)
    (RESULTS / "topologies.json").write_text(json.dumps(figures, indent=2, default=str))
    print(text)


if __name__ == "__main__":
    main()
