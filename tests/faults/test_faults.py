"""Fault injection: nothing raised, nothing blocked, every event delivered or counted.

Each test injects one fault for a bounded time through a FaultProxy between the notifier and a
real redis-server (or by killing the server, forking, or recycling Celery children), while
subscribers connect to Redis directly so that delivery is counted exactly. The figures each test
measures are printed as ``FIGURES`` lines (``pytest -s``) and tabled in
docs/internals/reliability.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from notifier import Notifier
from notifier.publisher import FORCE_STOP_GRACE
from notifier.testing import EventCollector, RedisServer, wait_until

from support.faultproxy import FaultProxy
from support.faults import NEVER_WAITS, PacedPublisher, Tally, ms, report, seq_key
from support.helpers import assert_invariant

# The proof that a publish call never waits on the network: during a fault that holds every
# round trip for seconds (a silent link past a publish_timeout of BLACKHOLE_TIMEOUT), no call
# takes NEVER_WAITS (fault_helpers.py says why that bound). The tight figures (worst call,
# beside the machine's own stalls) are measured by `make soak` and `make bench`, and reported,
# never asserted: see docs/internals/reliability.md.
BLACKHOLE_TIMEOUT = 1.5
# Published at about 2,000 events/s by the tests that stream through a fault.
RATE = 2000.0


def tick(n: Notifier, task_id: str) -> Callable[[int], bool]:
    return lambda i: n.publish(task_id, "tick", {"seq": i})


def connected(n: Notifier) -> bool:
    return bool(n.stats()["connected"])


def test_connection_resets_mid_stream_lose_nothing(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """Five connection resets at ~2,000 events/s: no caller error, every event arrives."""
    proxy = proxy_factory(redis_server)
    tally = Tally(seq_key)
    tally.add(collector_factory(redis_server.url, "task:resets"))
    n = notifier_factory(proxy.url)
    n.start()
    wait_until(lambda: connected(n), 5)
    total, resets = 8000, 5
    pacer = PacedPublisher(tick(n, "resets"), total, RATE).start()
    for k in range(resets):
        pacer.wait_calls((k + 1) * 1000)  # a reset every ~0.5 s, mid-stream
        wait_until(lambda: connected(n) and proxy.active == 1, 5)
        before = n.stats()["reconnects"]
        assert 1 == proxy.reset_all()
        wait_until(lambda b=before: n.stats()["reconnects"] > b, 5)
    pacer.join()
    assert [] == pacer.errors
    assert [True] * total == pacer.results
    assert n.flush(15)
    tally.wait_for(("resets", i) for i in range(total))

    stats = n.stats()
    assert total == stats["published"]
    assert resets <= stats["reconnects"]
    assert_invariant(stats)
    assert {1} == set(tally.keys.values())  # a resend repeats an event_id, never a new one
    assert tally.duplicates <= stats["resent"]  # every duplicate comes from a counted resend
    assert [] == tally.unparsable
    report(
        "resets",
        events=total,
        resets=resets,
        reconnects=stats["reconnects"],
        delivered_unique=len(tally.copies),
        duplicates=tally.duplicates,
        resent=stats["resent"],
        worst_call_ms=ms(pacer.worst()),
        dropped=stats["dropped"],
    )


def test_blackhole_past_publish_timeout_never_blocks_and_replaces_the_connection(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A link that swallows everything for 4x publish_timeout: calls stay fast, a new connection
    replaces the timed-out one, and every event arrives once the link is back. No call waits
    NEVER_WAITS, a third of the publish_timeout that a call waiting on Redis would take."""
    proxy = proxy_factory(redis_server)
    tally = Tally(seq_key)
    tally.add(collector_factory(redis_server.url, "task:blackhole"))
    timeout = BLACKHOLE_TIMEOUT
    n = notifier_factory(proxy.url, redis={"publish_timeout": timeout, "connect_timeout": timeout})
    n.start()
    wait_until(lambda: connected(n), 5)
    total = 3000
    pacer = PacedPublisher(tick(n, "blackhole"), total, 1000).start()
    pacer.wait_calls(500)
    opened_before = proxy.accepted
    with capture_logs() as logs:
        fault_start = time.monotonic()
        proxy.blackhole()
        wait_until(lambda: any(e["event"] == "notification_publish_timeout" for e in logs), 10)
        timed_out_at = time.monotonic()
        # Past the timeout the notifier opens new connections (each stalls at its PING, in turn)
        wait_until(lambda: proxy.accepted >= opened_before + 2, 10)
        wait_until(lambda: time.monotonic() - fault_start >= 3 * timeout, 10)
        # ...and it closed the timed-out one: never more than one connection held open.
        wait_until(lambda: proxy.active <= 1, 5)
        fault_end = time.monotonic()
        proxy.forward()
    pacer.join()
    assert n.flush(15)
    tally.wait_for(("blackhole", i) for i in range(total))

    assert [] == pacer.errors
    assert [True] * total == pacer.results
    stats = n.stats()
    assert total == stats["published"]
    assert stats["resent"] >= 1  # the batch cut off by the timeout was sent again
    assert_invariant(stats)
    assert {1} == set(tally.keys.values())
    assert tally.duplicates <= stats["resent"]
    worst_during = pacer.worst(fault_start, fault_end)
    assert worst_during < NEVER_WAITS < timeout
    report(
        "blackhole",
        events=total,
        publish_timeout_s=timeout,
        fault_s=round(fault_end - fault_start, 3),
        timeout_detected_after_s=round(timed_out_at - fault_start, 3),
        connections_opened_during_fault=proxy.accepted - opened_before,
        worst_call_during_fault_ms=ms(worst_during),
        calls_during_fault=sum(fault_start <= s <= fault_end for s in pacer.started_at),
        delivered_unique=len(tally.copies),
        duplicates=tally.duplicates,
        resent=stats["resent"],
    )


# Runs in a fresh interpreter, so that RSS measures this notifier's queue and nothing else (the
# pytest process reuses memory earlier tests freed, which would hide growth). Prints one JSON line.
OUTAGE_SCRIPT = """
    import gc, json, sys, time
    import psutil
    from structlog.testing import capture_logs
    from notifier import Notifier, NotifierConfig
    from notifier.config import QueueConfig, ReconnectConfig, RedisConfig
    from notifier.events import encode_event
    
    url, overflow, calls, maxsize, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    n = Notifier(NotifierConfig(
        redis=RedisConfig(url=url, connect_timeout=1.0, publish_timeout=1.0),
        queue=QueueConfig(
            maxsize=maxsize, batch_size=batch, overflow=overflow, progress_interval=0.0
        ),
        reconnect=ReconnectConfig(initial_backoff=0.01, max_backoff=0.2),
    ))
    n.start()
    message = "step 123456 of 1000000: resizing images"
    sample = encode_event("outage", "progress", {"progress": 12.5, "message": message}, 1 << 20)
    process = psutil.Process()
    gc.collect()
    rss_before = process.memory_info().rss
    accepted, worst = 0, 0.0
    with capture_logs() as logs:
        started = time.monotonic()
        for i in range(calls):
            t = time.perf_counter()
            accepted += n.publish_progress("outage", i / 10_000, message)
            worst = max(worst, time.perf_counter() - t)
        elapsed = time.monotonic() - started
    gc.collect()
    rss_after = process.memory_info().rss
    stats = n.stats()
    n.close(timeout=0)
    print(json.dumps({
        "accepted": accepted, "worst": worst, "elapsed": elapsed, "event_bytes": len(sample),
        "rss_before": rss_before, "rss_after": rss_after, "stats": stats,
        "closed": n.stats(), "log_events": [e["event"] for e in logs],
    }))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
def test_outage_longer_than_the_queue_keeps_memory_and_logs_bounded(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    tmp_path: Path,
    overflow: str,
) -> None:
    """400,000 calls into a refused link: RSS grows by the queue's worth, not the calls',
    drops are counted by reason, and notification_dropped is logged a few times, not per call."""
    proxy = proxy_factory(redis_server)
    proxy.refuse()
    maxsize, batch, calls = 20_000, 256, 400_000
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OUTAGE_SCRIPT), proxy.url, overflow]
        + [str(calls), str(maxsize), str(batch)],
        cwd=tmp_path,
        env={"NOTIFIER_CONFIG": "", "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    accepted, stats, closed = out["accepted"], out["stats"], out["closed"]
    assert_invariant(stats)
    assert_invariant(closed)
    if overflow == "drop_newest":
        # The queue holds maxsize; the sender holds one more batch while it retries.
        assert maxsize <= accepted <= maxsize + batch
        assert {"queue_full": calls - accepted} == stats["dropped_by_reason"]
    else:
        assert calls == accepted == stats["accepted"]
        assert {"evicted": calls - stats["pending"]} == stats["dropped_by_reason"]
    assert 0 == stats["published"]
    assert maxsize <= stats["pending"] <= maxsize + batch
    assert stats["pending"] == closed["dropped_by_reason"]["shutdown"]

    growth = out["rss_after"] - out["rss_before"]
    budget = maxsize * out["event_bytes"]
    # Python keeps each queued event as a bytes object in a tuple (about 100 bytes of headers
    # on top of the payload); 3x the payload is that and allocator slack. An unbounded queue
    # would be 20x (calls / maxsize).
    assert growth < 3 * budget, (growth, budget)

    dropped_lines = out["log_events"].count("notification_dropped")
    elapsed = out["elapsed"]
    assert 1 <= dropped_lines <= 2 + elapsed / 10  # at most one per 10 s, plus the first
    assert len(out["log_events"]) <= 5 + elapsed / 10, out["log_events"]
    report(
        f"outage_{overflow}",
        calls=calls,
        seconds=round(elapsed, 2),
        us_per_call=round(elapsed / calls * 1e6, 2),
        worst_call_ms=ms(out["worst"]),
        accepted=accepted,
        dropped_by_reason=closed["dropped_by_reason"],
        event_bytes=out["event_bytes"],
        queue_maxsize=maxsize,
        rss_before_mib=round(out["rss_before"] / 2**20, 1),
        rss_after_mib=round(out["rss_after"] / 2**20, 1),
        rss_growth_mib=round(growth / 2**20, 2),
        growth_over_maxsize_x_event=round(growth / budget, 2),
        notification_dropped_lines=dropped_lines,
        log_lines=len(out["log_events"]),
    )


def test_redis_killed_and_restarted_three_times_in_a_row(
    redis_factory: Callable[..., RedisServer],
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """SIGKILL and restart on the same port three times within seconds: every event arrives."""
    server = redis_factory()
    proxy = proxy_factory(server)  # holds the notifier off while the new subscriber subscribes
    tally = Tally(seq_key)
    tally.add(collector_factory(server.url))
    n = notifier_factory(proxy.url)
    n.start()
    wait_until(lambda: connected(n), 5)
    total, restarts = 8000, 3
    pacer = PacedPublisher(tick(n, "restarts"), total, RATE).start()
    outages = []
    for k in range(restarts):
        pacer.wait_calls((k + 1) * 1500)
        wait_until(lambda: connected(n), 5)
        before = n.stats()["reconnects"]
        down = time.monotonic()
        server.kill()
        proxy.refuse()
        server.start()
        tally.add(collector_factory(server.url))
        proxy.forward()
        wait_until(lambda b=before: n.stats()["reconnects"] > b, 10)
        outages.append(round(time.monotonic() - down, 3))
    pacer.join()
    assert [] == pacer.errors
    assert [True] * total == pacer.results
    assert n.flush(15)
    tally.wait_for(("restarts", i) for i in range(total))

    stats = n.stats()
    assert total == stats["published"]
    assert restarts <= stats["reconnects"]
    assert_invariant(stats)
    assert {1} == set(tally.keys.values())
    report(
        "restarts",
        events=total,
        restarts=restarts,
        outage_s=outages,
        reconnects=stats["reconnects"],
        delivered_unique=len(tally.copies),
        duplicates=tally.duplicates,
        resent=stats["resent"],
        worst_call_ms=ms(pacer.worst()),
    )


def test_close_while_blackholed_meets_its_deadline(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """close(timeout=1) with a batch stuck on a silent link returns long before the send's own
    5 s timeout and counts every undelivered event as a shutdown drop."""
    proxy = proxy_factory(redis_server)
    n = notifier_factory(proxy.url, redis={"publish_timeout": 5.0})  # the send outlives close
    n.start()
    wait_until(lambda: connected(n), 5)
    proxy.blackhole()
    for i in range(1000):
        assert n.publish("closing", "tick", {"seq": i})
    with capture_logs() as logs:
        started = time.monotonic()
        n.close(timeout=1)
        elapsed = time.monotonic() - started
    stats = n.stats()
    assert 1.0 <= elapsed < 1.0 + FORCE_STOP_GRACE + 1.0  # the deadline, not publish_timeout
    assert not stats["thread_alive"]
    assert {"shutdown": 1000} == stats["dropped_by_reason"]
    assert (0, 0) == (stats["published"], stats["pending"])
    assert_invariant(stats)
    dropped = [e for e in logs if e["event"] == "notification_dropped"]
    assert [("shutdown", 1000)] == [(e["reason"], e["count"]) for e in dropped]
    report(
        "close_blackholed", close_timeout_s=1, close_took_s=round(elapsed, 3), shutdown_drops=1000
    )


def test_flush_waiting_during_close_returns_when_close_has_counted_the_rest(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A flush() blocked on a silent link returns as soon as close() has settled every event."""
    proxy = proxy_factory(redis_server)
    n = notifier_factory(proxy.url, redis={"publish_timeout": 5.0})
    n.start()
    wait_until(lambda: connected(n), 5)
    proxy.blackhole()
    assert n.publish("closing", "tick", {"seq": 0})
    flushed: list[tuple[bool, float]] = []

    def flush() -> None:
        started = time.monotonic()
        flushed.append((n.flush(4), time.monotonic() - started))

    waiter = threading.Thread(target=flush)
    waiter.start()
    n.close(timeout=0.5)
    waiter.join(15)
    assert {"shutdown": 1} == n.stats()["dropped_by_reason"]
    ((settled, took),) = flushed
    assert settled
    assert took < 0.5 + FORCE_STOP_GRACE + 1.0  # not the flush's own 4 s


EXIT_SCRIPT = """
    import sys, time
    import notifier
    connected = sys.argv[1] == "established"
    assert notifier.publish("exit-blackhole", "tick", {"seq": 0})
    if connected:
        assert notifier.flush(10)
    print("ready", flush=True)
    sys.stdin.readline()  # the test blackholes the link (again) and says go
    for i in range(1, 1001):
        assert notifier.publish("exit-blackhole", "tick", {"seq": i})
    print("end", time.time(), flush=True)
"""

# What a clean exit must never print (as in test_process.py).
NOISE = ("Traceback", "Task was destroyed", "Event loop is closed", "Exception ignored")


@pytest.mark.parametrize("link", ["established", "never_connected"])
def test_interpreter_exit_while_blackholed_ends_within_drain_timeout(
    redis_server: RedisServer,
    proxy_factory: Callable[[RedisServer], FaultProxy],
    tmp_path: Path,
    link: str,
) -> None:
    """A script publishing into a silent link and then ending exits by itself, within
    drain_timeout and a bound, counting the rest as shutdown drops, with no noise."""
    proxy = proxy_factory(redis_server)
    if link == "never_connected":
        proxy.blackhole()
    drain = 1.0
    config = tmp_path / "config.toml"
    config.write_text(
        f"[shutdown]\ndrain_timeout = {drain}\n"
        "[redis]\nconnect_timeout = 0.5\npublish_timeout = 5.0\n"
    )
    env = {
        "PYTHONASYNCIODEBUG": "0",
        "NOTIFIER_CONFIG": str(config),
        "NOTIFIER_REDIS_URL": proxy.url,
    }
    process = subprocess.Popen(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(EXIT_SCRIPT), link],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = _exit_run(process, proxy)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    exited_at, output = output
    assert 0 == process.returncode, output
    end_line = re.search(r"^end ([\d.]+)$", output, re.M)
    assert end_line is not None, output
    exit_delay = exited_at - float(end_line.group(1))
    assert exit_delay < drain + FORCE_STOP_GRACE + 2.0, output  # publish_timeout is 5 s
    for noise in NOISE:
        assert noise not in output, output
    expected_drops = 1000 if link == "established" else 1001
    closed = re.search(r"notifier_closed\s.*dropped=(\d+)", output)
    assert closed is not None and expected_drops == int(closed.group(1)), output
    assert "'shutdown': " + str(expected_drops) in output, output
    report(f"exit_blackholed_{link}", drain_timeout_s=drain, exit_after_end_s=round(exit_delay, 3))


def _exit_run(process: subprocess.Popen[str], proxy: FaultProxy) -> tuple[float, str]:
    """Drive the exit script: wait for ready, blackhole, say go, wait for it to exit by itself."""
    assert process.stdin is not None and process.stdout is not None
    lines = []
    for line in iter(process.stdout.readline, ""):  # bounded: the script prints ready or dies
        lines.append(line)
        if line.startswith("ready"):
            break
    proxy.blackhole()
    process.stdin.write("go\n")
    process.stdin.flush()
    rest, _ = process.communicate(timeout=30)
    return time.time(), "".join(lines) + rest


def _debug_sleeper(server: RedisServer, stop: threading.Event) -> threading.Thread:
    """A thread that keeps Redis asleep 0.25 s at a time, awake 0.05 s between, until ``stop``."""

    def run() -> None:
        with server.client(socket_timeout=5) as client:
            while not stop.wait(0.05):
                client.execute_command("DEBUG", "SLEEP", "0.25")

    thread = threading.Thread(target=run, name="debug-sleeper", daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("slowness", ["proxy_latency", "debug_sleep"])
def test_slow_redis_degrades_throughput_but_loses_nothing(
    redis_factory: Callable[..., RedisServer],
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
    slowness: str,
) -> None:
    """Slow replies (0.2 s round trips, or a server that sleeps 0.25 s at a time): a backlog
    forms and delivery slows below the offered rate, but every call is accepted and all arrive.
    (The worst call is reported: a wait on a 0.2 s round trip is too short to assert on here.)"""
    server = redis_factory(extra=["--enable-debug-command", "yes"])
    proxy = proxy_factory(server)
    tally = Tally(seq_key)
    tally.add(collector_factory(server.url, "task:slow"))
    n = notifier_factory(proxy.url, redis={"publish_timeout": 2.0})  # slow, never timed out
    n.start()
    wait_until(lambda: connected(n), 5)
    stop = threading.Event()
    if slowness == "proxy_latency":
        proxy.latency(0.1)
    else:
        sleeper = _debug_sleeper(server, stop)
    total = 4000
    peak_pending = 0
    try:
        started = time.monotonic()
        pacer = PacedPublisher(tick(n, "slow"), total, RATE).start()
        while pacer.calls < total:
            peak_pending = max(peak_pending, n.stats()["pending"])
            pacer.wait_calls(pacer.calls + 100)
        pacer.join()
        assert n.flush(30)
        delivered_in = time.monotonic() - started
    finally:
        stop.set()
        if slowness == "debug_sleep":
            sleeper.join(5)
    tally.wait_for(("slow", i) for i in range(total))

    assert [] == pacer.errors
    assert [True] * total == pacer.results
    stats = n.stats()
    assert total == stats["published"]
    assert 0 == stats["resent"] == tally.duplicates  # slow is not broken: nothing resent
    assert_invariant(stats)
    throughput = total / delivered_in
    if slowness == "proxy_latency":  # 256 events per 0.2 s round trip: at most 1,280/s
        assert throughput < 0.8 * RATE
    assert peak_pending > n.config.queue.batch_size  # a backlog formed in the queue
    report(
        f"slow_{slowness}",
        events=total,
        offered_per_s=RATE,
        delivered_per_s=round(throughput),
        peak_pending=peak_pending,
        worst_call_ms=ms(pacer.worst()),
        duplicates=tally.duplicates,
    )
