"""`make soak`: the notifier under steady load and repeated faults for minutes, every event counted.

A publisher thread calls ``publish_progress`` at a fixed rate through a FaultProxy in front of a
real redis-server. Every ``--restart-every`` seconds the server is killed with SIGKILL and started
again on the same port; every ``--reset-every`` seconds the proxy resets the notifier's
connection. A subscriber in its own process (raw socket and hiredis, so it keeps up) counts each
event by its sequence number. At the end:

    delivered (de-duplicated) + dropped (by reason) + coalesced == publish calls

and RSS, open file descriptors and threads at the start and the end of the run are printed
(the start is taken after a warm-up, once the first faults have happened). Exits 1 when an event
is unaccounted for, or when resources did not stay flat.

The caller's cost per call (p50, p99, worst), over the whole run and within FAULT_WINDOW of each
fault, is printed beside a stall probe's figures for the same windows: a process of its own that
measures how late the machine wakes a sleeping thread (bench/stalls.py). They are reported, never
judged: on a shared machine the worst call follows the machine's own stalls.

    python -m bench.soak [--minutes 10] [--rate 5000] [--restart-every 60] [--reset-every 45]
                         [--progress-interval 0]

By default every publish call's event goes on the wire (``--progress-interval 0``), so that the
faults meet 5,000 events/s; ``--progress-interval 0.1`` soaks progress coalescing instead, with
the coalesced events in the accounting.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import hiredis
import psutil
import redis

from bench.stalls import CallTimes, StallProbe
from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, RedisConfig
from notifier.testing import RedisServer, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.faultproxy import FaultProxy  # noqa: E402  (the proxy the tests use)

PATTERN = b"task:soak-*"
TASKS = 100  # events are spread over this many task ids (channels)
BURST = 50  # calls per pacing step
WARM_UP = 75.0  # seconds before the "start" figures: past the first reset and restart
FAULT_WINDOW = 2.0  # seconds from a fault's start counted as "during the fault"


# The subscriber process ---------------------------------------------------------------------


class Counts:
    """How many times each sequence number arrived (saturating at 255)."""

    def __init__(self) -> None:
        self.seen = bytearray()
        self.received = 0
        self.unique = 0
        self.unparsable = 0
        self.reconnects = 0

    def add(self, seq: int) -> None:
        if seq >= len(self.seen):
            self.seen.extend(bytes(max(seq + 1 - len(self.seen), 1 << 20)))
        self.received += 1
        if self.seen[seq] == 0:
            self.unique += 1
        self.seen[seq] = min(255, self.seen[seq] + 1)

    def summary(self) -> dict[str, int]:
        return {
            "received": self.received,
            "unique": self.unique,
            "duplicates": self.received - self.unique,
            "unparsable": self.unparsable,
            "reconnects": self.reconnects,
        }


def subscribe(port: int) -> None:
    """Count events until stdin closes; answer each line on stdin with the counts as JSON."""
    counts = Counts()
    threading.Thread(target=_listen, args=(port, counts), daemon=True).start()
    for _ in sys.stdin:
        print(json.dumps(counts.summary()), flush=True)


def _listen(port: int, counts: Counts) -> None:
    """PSUBSCRIBE and count; when the server dies, reconnect as soon as it is back."""
    first = True
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
        except OSError:
            time.sleep(0.01)  # the server is restarting: retry promptly
            continue
        if not first:
            counts.reconnects += 1
        first = False
        with sock:
            sock.settimeout(None)
            sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(PATTERN), PATTERN))
            _read(sock, counts)


def _read(sock: socket.socket, counts: Counts) -> None:
    reader = hiredis.Reader()
    while True:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return
        if not data:
            return
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, list) and reply[0] == b"pmessage":
                try:
                    counts.add(json.loads(reply[3])["data"]["seq"])
                except (ValueError, KeyError, TypeError):
                    counts.unparsable += 1


# The soak itself ---------------------------------------------------------------------------


def resources() -> dict[str, Any]:
    process = psutil.Process()
    return {
        "rss_mib": round(process.memory_info().rss / 2**20, 1),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": process.num_threads(),
        "python_threads": threading.active_count(),
    }


class Publisher:
    """Calls publish_progress at ``rate`` per second on its own thread until stopped."""

    def __init__(self, notifier: Notifier, rate: float) -> None:
        self.notifier = notifier
        self.rate = rate
        self.calls = 0
        self.accepted = 0
        self.errors = 0
        self.times = CallTimes()  # every call
        self.fault_times = CallTimes()  # calls that started within FAULT_WINDOW of a fault
        self.fault_until = -1.0  # monotonic time; set by the main loop at each fault
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        begin, n = time.monotonic(), self.notifier
        while not self._stop.is_set():
            ahead = begin + self.calls / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the offered load
            for _ in range(BURST):
                seq = self.calls
                started = time.perf_counter_ns()
                try:
                    ok = n.publish_progress(
                        f"soak-{seq % TASKS}", seq % 100, message="resizing images", seq=seq
                    )
                except Exception:  # the property under test: this never happens
                    ok = False
                    self.errors += 1
                took = time.perf_counter_ns() - started
                self.times.add(took)
                if time.monotonic() < self.fault_until:
                    self.fault_times.add(took)
                self.accepted += ok
                self.calls += 1


class Subscriber:
    """The counting subscriber process."""

    def __init__(self, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--subscriber", str(port)],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def counts(self) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("counts\n")
        self.process.stdin.flush()
        answer: dict[str, int] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def subscribed(server: RedisServer) -> bool:
    try:
        with server.client(socket_timeout=1.0) as client:
            return int(client.execute_command("PUBSUB", "NUMPAT")) >= 1
    except (OSError, redis.RedisError):  # still starting
        return False


def restart(server: RedisServer, proxy: FaultProxy) -> float:
    """SIGKILL and start again on the same port; the proxy holds the notifier off until the
    subscriber is back, so that no event is published to an empty room. Returns the outage."""
    down = time.monotonic()
    server.kill()
    proxy.refuse()
    server.start()
    wait_until(lambda: subscribed(server), 30, 0.01)
    proxy.forward()
    return time.monotonic() - down


def steady_resources(n: Notifier, proxy: FaultProxy) -> dict[str, Any]:
    """resources() once the notifier holds exactly one connection (not mid-reconnect)."""
    wait_until(lambda: n.stats()["connected"] and proxy.active == 1, 30)
    return resources()


def log(t0: float, message: str, **fields: Any) -> None:
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"[{time.monotonic() - t0:7.1f}s] {message} {extra}", flush=True)


def soak(args: argparse.Namespace) -> int:
    duration = args.minutes * 60
    server = RedisServer().start()
    proxy = FaultProxy("127.0.0.1", server.port).start()
    subscriber = Subscriber(server.port)
    try:
        with StallProbe() as probe:
            wait_until(lambda: subscribed(server), 30)
            return _run(args, duration, server, proxy, subscriber, probe)
    finally:
        subscriber.close()
        proxy.close()
        server.stop()


def _run(
    args: argparse.Namespace,
    duration: float,
    server: RedisServer,
    proxy: FaultProxy,
    subscriber: Subscriber,
    probe: StallProbe,
) -> int:
    n = Notifier(  # defaults otherwise
        NotifierConfig(
            redis=RedisConfig(url=proxy.url),
            queue=QueueConfig(progress_interval=args.progress_interval),
        )
    )
    n.start()
    wait_until(lambda: n.stats()["connected"], 10)
    publisher = Publisher(n, args.rate)
    initial = resources()
    t0 = time.monotonic()
    publisher.start()
    next_restart, next_reset, next_sample = args.restart_every, args.reset_every, 60.0
    warm_up = min(WARM_UP, duration / 2)
    start: dict[str, Any] | None = None
    restarts: list[float] = []
    resets = 0
    faults: list[tuple[float, float]] = []  # (start, end) of each fault window, monotonic

    def fault_begins() -> None:
        begin = time.monotonic()
        publisher.fault_until = begin + FAULT_WINDOW
        faults.append((begin, begin + FAULT_WINDOW))

    while (now := time.monotonic() - t0) < duration:
        if start is None and now >= warm_up:
            start = steady_resources(n, proxy)
            log(t0, "start figures", **start)
        if now >= next_restart:
            fault_begins()
            restarts.append(round(restart(server, proxy), 3))
            next_restart += args.restart_every
            log(t0, "redis restarted", outage_s=restarts[-1])
        if now >= next_reset:
            fault_begins()
            resets += proxy.reset_all()
            next_reset += args.reset_every
            log(t0, "proxy reset")
        if now >= next_sample:
            next_sample += 60.0
            s = n.stats()
            log(t0, "sample", calls=publisher.calls, published=s["published"], **resources())
        time.sleep(0.05)  # the scheduler's tick, not a synchronisation
    end = steady_resources(n, proxy)  # like the start: publishing, connected
    publisher.stop()
    run_window = (t0, time.monotonic())
    flushed = n.flush(30)
    n.close(timeout=5)
    stats = n.stats()
    counts = _final_counts(subscriber, stats["published"])
    dropped = sum(stats["dropped_by_reason"].values())
    missing = publisher.calls - counts["unique"] - dropped - stats["coalesced"]
    start = start or end
    report = {
        "minutes": args.minutes,
        "rate": args.rate,
        "calls": publisher.calls,
        "accepted": publisher.accepted,
        "caller_exceptions": publisher.errors,
        # Reported side by side, never judged: see the module's docstring.
        "caller_us": {
            "all": publisher.times.figures(),
            "during_faults": publisher.fault_times.figures(),
        },
        "machine_stalls_us": {
            "all": probe.window([run_window]),
            "during_faults": probe.window(faults),
        },
        "flushed": flushed,
        "published": stats["published"],
        "delivered_unique": counts["unique"],
        "duplicates": counts["duplicates"],
        "unparsable": counts["unparsable"],
        "dropped_by_reason": stats["dropped_by_reason"],
        "coalesced": stats["coalesced"],
        "unaccounted": missing,
        "resent": stats["resent"],
        "reconnects": stats["reconnects"],
        "redis_restarts": len(restarts),
        "restart_outages_s": restarts,
        "proxy_resets": resets,
        "initial": initial,
        "start": start,
        "end": end,
    }
    print(json.dumps(report, indent=2), flush=True)
    flat = (
        end["fds"] == start["fds"]
        and end["threads"] == start["threads"]
        and end["rss_mib"] <= start["rss_mib"] * 1.2 + 5
    )
    ok = missing == 0 and publisher.errors == 0 and counts["unparsable"] == 0 and flat
    print("soak OK" if ok else "soak FAILED", flush=True)
    return 0 if ok else 1


def _final_counts(subscriber: Subscriber, published: int) -> dict[str, int]:
    """The subscriber's counts once it has read everything Redis published (or after 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        counts = subscriber.counts()
        if counts["unique"] >= published or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)  # polling another process's counter, with a deadline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="publish calls per second")
    parser.add_argument("--restart-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--reset-every", type=float, default=45.0, help="seconds")
    parser.add_argument(
        "--progress-interval", type=float, default=0.0, help="queue.progress_interval, seconds"
    )
    parser.add_argument("--subscriber", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber is not None:
        subscribe(args.subscriber)
        return
    sys.exit(soak(args))


if __name__ == "__main__":
    main()
