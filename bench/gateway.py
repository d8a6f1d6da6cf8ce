"""`make bench-gateway`: thousands of SSE subscribers on ``notifier gateway`` with one worker and
with N, beside what a user would write instead, side by side in one run.

Designs, each a server process of its own on uvicorn (access log off, backlog 4096, uvloop and
httptools) in front of a redis-server of its own, in one run, one after another in this order
(``--designs``). Not interleaved probe by probe: each design keeps its streams open across all
of its measurements, far quicker than reopening 10,000 of them for each, and one server at a
time leaves the others' idle streams out of its figures.

- **hub-1**: ``notifier gateway`` with one worker (one pub/sub connection, fanned out in it);
- **hub-N**: ``notifier gateway --workers N``, N = ``--workers`` (default: the machine's cores),
  one pub/sub connection per worker, the kernel spreading the streams over them;
- **sse-starlette**: the peer (``bench/gateway_peer.py``): a plain sse-starlette endpoint with a
  ``redis.asyncio`` pub/sub subscription of its own per open page, no tokens, no history;
- **per-page** (only when ``--designs`` names it): SSE over ``notifier.consumer.subscribe()``,
  two Redis connections per open page;
- **baseline** (only with ``--baseline PATH``, a checkout of an earlier commit, for example a
  ``git worktree``): ``notifier gateway`` with one worker run from that checkout, for an A/B of
  a change to the gateway. A design may be named more than once (``hub-1,baseline,hub-1,
  baseline``): each time, a server of its own, in that order.

A load generator in a process of its own opens ``--subscribers`` SSE streams (raw asyncio
sockets) spread evenly over ``--tasks`` tasks and times every event from its ``timestamp``, set
by the publishing call in this process, to its arrival. It keeps its streams open for the whole
design and takes commands on stdin: before each measurement it reopens any stream that closed,
waits until no event has come for half a second, and zeroes its figures. After publishing,
each measurement waits for every delivery (or none for 2 s, or ``--drain-seconds``): a server
that fell behind must catch up before the next. On 2 cores the load generator competes with
the server for the CPU: its CPU seconds are reported beside the server's, Redis's and the
publisher's.

For each design:

1. Idle: Redis connections held by the server, its RSS per idle subscriber (with the streams
   open and quiet, minus before, over their number; summed over its processes), and for hub-N
   the streams each worker holds.
2. The search (``--no-search`` skips it): probes of ``--probe-seconds`` on the same streams,
   from ``--search-from`` events/s doubling while the p99 stays within ``--budget-ms`` and every
   delivery arrives, then ``--search-steps`` bisections between the last rate that held and the
   first that did not: the best rate each design holds, and its deliveries/s.
3. The row: ``--rate`` events/s over the tasks for ``--seconds``; the delay's p50/p99/max,
   deliveries received against expected, the backlog (from the last publishing call to the last
   delivery), and CPU seconds (server with its workers, load generator, redis-server,
   publisher) over the publishing and the drain after it.

``--profile`` runs ``py-spy record`` (non-blocking, Python frames; ``--profile-native`` pauses
the process for native frames too) on hub-1's server and its workers for the first
``--profile-seconds`` of its row, writes the raw stacks to bench/results/, and prints the leaf
functions by share of the samples and the share of a few named frames anywhere in the stack.

Writes bench/results/gateway.md (the tables, also printed) and bench/results/gateway.json.

    python -m bench.gateway [--subscribers 10000] [--tasks 100] [--rate 1000] [--seconds 20]
                            [--workers N] [--designs hub-1,hub-N,sse-starlette]
                            [--baseline PATH]
                            [--no-search] [--probe-seconds 8] [--budget-ms 50]
                            [--drain-seconds 180]
                            [--search-from 100] [--search-max 25600] [--search-steps 3]
                            [--profile] [--profile-seconds 5] [--profile-native]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import psutil

from notifier import Notifier, NotifierConfig
from notifier.config import (
    GatewayConfig,
    HistoryConfig,
    LoggingConfig,
    QueueConfig,
    RedisConfig,
)
from notifier.gateway import issue_token
from notifier.testing import RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-gateway-secret-0123456789abcdef"
DESIGNS = ("hub-1", "hub-N", "sse-starlette")
PEERS = {  # design: its app factory in bench/gateway_peer.py
    "sse-starlette": "bench.gateway_peer:create_app",
    "per-page": "bench.gateway_peer:consumer_app",
}
FILES = 65_536  # open files per process: the peer holds two sockets per stream


def say(text: str) -> None:
    print(f"bench.gateway: {text}", file=sys.stderr, flush=True)


# The load generator process -----------------------------------------------------------------

FRAME = b"\ndata: {"  # an event's data line: every event is one
STAMP = b'"timestamp":"'
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked response: the server ended the stream
NEW, CONNECTING, OPEN, REFUSED, CLOSED = "new", "connecting", "open", "refused", "closed"
QUIET = 0.5  # seconds without an event before a measurement starts


class Delays:
    """A histogram of delays in 0.1 ms bins up to 60 s: no growing list, no sort, at 100,000
    deliveries a second."""

    BINS_PER_S = 10_000
    BINS = 60 * BINS_PER_S

    def __init__(self) -> None:
        self.counts = [0] * self.BINS
        self.n = 0
        self.max = 0.0

    def add(self, delay: float) -> None:
        i = int(delay * self.BINS_PER_S)
        self.counts[min(max(i, 0), self.BINS - 1)] += 1
        self.n += 1
        if delay > self.max:
            self.max = delay

    def ms(self, q: float) -> float:
        """The ``q`` quantile in ms (the upper edge of its bin)."""
        target, seen = max(1, round(self.n * q)), 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= target:
                return round((i + 1) * 1000 / self.BINS_PER_S, 1)
        return 0.0


class Load:
    """The load generator's streams and what they received. A Protocol per stream, not a
    StreamReader: at 100,000 events/s the client's own cost must stay far below the server's."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.port: int = spec["port"]
        self.tokens: dict[str, str] = spec["tokens"]
        self.streams = [_Stream(self, task) for task in spec["tasks"] * spec["per_task"]]
        self.stamps: dict[bytes, float] = {}  # the same event reaches every stream of its task
        self.zero()

    def zero(self) -> None:
        self.delays = Delays()
        self.received = 0
        self.lost = 0  # streams that closed since
        self.overflows = 0
        self.last_at = 0.0  # time.time() of the last event
        self.stamps.clear()
        for stream in self.streams:
            stream.events = 0

    async def run(self) -> None:
        """Open the streams, say how many opened, then answer commands until "stop"."""
        loop = asyncio.get_running_loop()
        await self.connect(self.streams, "")
        await self.until_answered(60)
        answer(self.status())
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line in ("", "stop"):
                break
            if line == "reset":
                answer(await self.reset())
            elif line == "figures":
                answer(self.figures())
            else:
                answer(self.status())
        for stream in self.streams:
            stream.close()

    async def connect(self, streams: list[_Stream], query: str) -> None:
        loop = asyncio.get_running_loop()
        for i, stream in enumerate(streams):
            stream.state = CONNECTING
            try:
                await loop.create_connection(stream.itself, "127.0.0.1", self.port)
            except OSError:
                stream.state = REFUSED
                continue
            token = self.tokens.get(stream.task, "")
            stream.write(
                f"GET /tasks/{stream.task}/events?token={token}{query} HTTP/1.1\r\n"
                "Host: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            if i % 200 == 199:
                await asyncio.sleep(0.05)  # ramp up: the server's accept backlog is finite

    async def until_answered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(s.state == CONNECTING for s in self.streams):
                return
            await asyncio.sleep(0.1)

    async def reset(self) -> dict[str, Any]:
        """Reopen the streams that closed, then zero the figures. A reopened stream asks from an
        event id that no stream holds: the gateway sends one ``reset`` entry, not the history."""
        gone = [s for s in self.streams if s.state in (REFUSED, CLOSED)]
        if gone:
            await self.connect(gone, "&last_event_id=0-0")
            await self.until_answered(30)
        await self.until_quiet(QUIET, 300)
        self.zero()
        return {**self.status(), "reopened": len(gone)}

    async def until_quiet(self, quiet: float, timeout: float) -> None:
        """Until no event came for ``quiet`` seconds: what a server still owed the last
        measurement (or a reopened stream's first entry) must not count in the next."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.received
            await asyncio.sleep(quiet)
            if self.received == before:
                return

    def status(self) -> dict[str, Any]:
        states = Counter(s.state for s in self.streams)
        return {
            "open": states[OPEN],
            "refused": states[REFUSED] + states[CONNECTING],
            "live": sum(1 for s in self.streams if s.state == OPEN and s.events),
            "received": self.received,
            # what a delivery count is checked against: a stream the server refused gets none
            "open_by_task": Counter(s.task for s in self.streams if s.state == OPEN),
        }

    def figures(self) -> dict[str, Any]:
        return {
            **self.status(),
            "timed": self.delays.n,
            "p50_ms": self.delays.ms(0.5),
            "p99_ms": self.delays.ms(0.99),
            "max_ms": round(self.delays.max * 1000, 1),
            "lost": self.lost,
            "overflows": self.overflows,
            "last_at": self.last_at,
        }

    def event(self, now: float, buf: bytes, start: int, end: int) -> None:
        """One event's frame in ``buf[start:end]``: count it, and time it by its timestamp."""
        self.received += 1
        self.last_at = now
        at = buf.find(STAMP, start, end)
        if at < 0:
            return  # the rest of its frame comes in the next read: counted, not timed
        at += len(STAMP)
        close = buf.find(b'"', at, end)
        if close < 0:
            return
        stamp = buf[at:close]
        sent = self.stamps.get(stamp)
        if sent is None:
            try:
                sent = datetime.fromisoformat(stamp.decode()).timestamp()
            except ValueError:
                return
            self.stamps[stamp] = sent
        self.delays.add(now - sent)


class _Stream(asyncio.Protocol):
    """One SSE stream: its state, and every event it receives, counted and timed."""

    def __init__(self, load: Load, task: str) -> None:
        self.load = load
        self.task = task
        self.state = NEW
        self.events = 0  # since the figures were zeroed
        self.transport: asyncio.Transport | None = None
        self.tail = b""  # the end of the last read: a frame's start may straddle two reads

    def itself(self) -> _Stream:
        """The protocol factory of its connection: the same stream, each time it reconnects."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport, self.tail = cast(asyncio.Transport, transport), b""

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.state != OPEN:
            if not data.startswith(b"HTTP/1.1 200"):
                self.state = REFUSED
                self.close()
                return
            self.state = OPEN
        buf = self.tail + data
        self.tail = buf[-(len(FRAME) - 1) :]
        at = buf.find(FRAME)
        while at >= 0:
            following = buf.find(FRAME, at + len(FRAME))
            self.events += 1
            self.load.event(now, buf, at, following if following >= 0 else len(buf))
            at = following
        if buf.endswith(END):  # the server ended it (the gateway: a client too slow)
            self.load.overflows += b"event: overflow" in buf
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == OPEN:
            self.load.lost += 1
            self.state = CLOSED
        elif self.state == CONNECTING:
            self.state = REFUSED
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            if self.state == OPEN:
                self.load.lost += 1
                self.state = CLOSED
            self.transport.close()
            self.transport = None


def answer(figures: dict[str, Any]) -> None:
    print(json.dumps(figures), flush=True)


def run_load() -> None:
    spec = json.loads(sys.stdin.readline())
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # The client's own collector must not stall it: its pauses would count as the server's.
    gc.disable()
    asyncio.run(Load(spec).run())


class LoadClient:
    """The load generator, from this side: a command on its stdin, a JSON answer per line."""

    def __init__(self, port: int, tasks: list[str], tokens: dict[str, str], per_task: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.gateway", "--load"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.psutil = psutil.Process(self.process.pid)
        spec = {"port": port, "tasks": tasks, "tokens": tokens, "per_task": per_task}
        self.opened = self.ask(json.dumps(spec))

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited ({self.process.wait(5)})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# The servers --------------------------------------------------------------------------------


class ServerFailed(RuntimeError):
    pass


class Server:
    """One design's server process, and its children (the gateway's workers)."""

    def __init__(
        self, design: str, workers: int, redis_url: str, workdir: Path, checkout: Path
    ) -> None:
        self.design = design
        self.workers = workers
        self.checkout = checkout  # the gateway's code: this one, or --baseline's
        self.port = free_port()
        config = workdir / f"{design}.toml"
        config.write_text(server_config(redis_url, self.port, workers, checkout))
        self.log_path = workdir / f"{design}.log"
        env = {**os.environ, "NOTIFIER_CONFIG": str(config), "NOTIFIER_GATEWAY_SECRET": SECRET}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.root = psutil.Process(self.process.pid)
        try:
            wait_until(self.answers, 60, 0.1)
        except BaseException:
            self.stop()
            raise

    def command(self) -> list[str]:
        if self.design in PEERS:
            return [
                *(sys.executable, "-m", "uvicorn", "--factory", PEERS[self.design]),
                *("--host", "127.0.0.1", "--port", str(self.port), "--loop", "uvloop"),
                *("--http", "httptools", "--no-access-log", "--log-level", "warning"),
                *("--backlog", "4096", "--timeout-graceful-shutdown", "5"),
            ]
        args = [sys.executable, "-m", "notifier.cli", "gateway"]
        # Without the flag, `notifier gateway` runs one worker; until --workers exists, asking
        # for more fails loudly here rather than measuring one worker under the name hub-N.
        if self.workers != 1 or gateway_has_workers_flag(self.checkout):
            args += ["--workers", str(self.workers)]
        return args

    def answers(self) -> bool:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise ServerFailed(f"exited with {self.process.returncode}: {' / '.join(tail)}")
        with contextlib.suppress(OSError):
            __import__("socket").create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        return False

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def streams_per_worker(self) -> list[int]:
        """Streams (ESTABLISHED on the server's port) per worker: each child that listens on
        the port or holds a stream on it, and the root if it holds any or is alone (a
        supervisor holds none; a resource tracker neither listens nor holds)."""
        root, *children = self.processes()
        workers = [sockets for child in children if any(sockets := port_sockets(child, self.port))]
        listening, held = port_sockets(root, self.port)
        if held or not workers:
            workers.insert(0, (listening, held))
        return [held for _, held in workers]

    def redis_connections(self, redis_port: int) -> int:
        return sum(connections(p, remote=redis_port) for p in self.processes())

    def stop(self) -> None:
        processes = self.processes()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for process in processes[1:]:  # a worker its supervisor left behind
            with contextlib.suppress(psutil.Error):
                process.kill()


def server_config(redis_url: str, port: int, workers: int, checkout: Path) -> str:
    """The servers' TOML. Limits that would refuse the load (10,000 streams from one address)
    are raised, each only if the server's checkout's ``[gateway]`` table has it."""
    gateway: dict[str, int] = {
        "port": port,
        "max_connections": 100_000,
        "workers": workers,
        "max_connections_per_client": 100_000,
    }
    known = gateway_keys(checkout)
    lines = [f"{key} = {value}" for key, value in gateway.items() if key in known]
    return f'[redis]\nurl = "{redis_url}"\n[history]\nenabled = true\n[gateway]\n' + "\n".join(
        lines
    )


@functools.cache
def gateway_keys(checkout: Path) -> frozenset[str]:
    """The ``[gateway]`` keys that the checkout's configuration knows."""
    if checkout == ROOT:
        return frozenset(f.name for f in dataclasses.fields(GatewayConfig))
    code = "import dataclasses as d, notifier.config as c; "
    code += "print(' '.join(f.name for f in d.fields(c.GatewayConfig)))"
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True, check=True
    )
    return frozenset(shown.stdout.split())


@functools.cache
def gateway_has_workers_flag(checkout: Path) -> bool:
    shown = subprocess.run(
        [sys.executable, "-m", "notifier.cli", "gateway", "--help"],
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    return "--workers" in shown.stdout


def port_sockets(process: psutil.Process, port: int) -> tuple[int, int]:
    """The process's sockets on its own ``port``: (listening, ESTABLISHED)."""
    mine = [c for c in _tcp(process) if c.laddr.port == port]
    return (
        sum(c.status == psutil.CONN_LISTEN for c in mine),
        sum(c.status == psutil.CONN_ESTABLISHED for c in mine),
    )


def connections(process: psutil.Process, remote: int) -> int:
    """The process's ESTABLISHED connections to ``remote`` (a port on this machine)."""
    return sum(
        c.status == psutil.CONN_ESTABLISHED and bool(c.raddr) and c.raddr.port == remote
        for c in _tcp(process)
    )


def _tcp(process: psutil.Process) -> list[Any]:
    try:
        return list(process.net_connections(kind="tcp"))
    except psutil.Error:
        return []


class CpuMeter:
    """CPU seconds (user + system) of groups of processes, from now on."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = groups
        self.start = {name: _cpu(get()) for name, get in groups.items()}

    def seconds(self) -> dict[str, float]:
        spent = {}
        for name, get in self.groups.items():
            before = self.start[name]
            now = _cpu(get())
            spent[name] = round(sum(s - before.get(pid, 0.0) for pid, s in now.items()), 2)
        return spent


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


# One design: its row and its search -----------------------------------------------------------


@dataclasses.dataclass
class Bench:
    """One design's server, its load and its publisher, up for all of its measurements."""

    design: str
    args: argparse.Namespace
    server: Server
    redis: RedisServer
    load: LoadClient
    publisher: Notifier
    tasks: list[str]
    per_task: int

    def meter(self) -> CpuMeter:
        redis_process = psutil.Process(self.redis.process.pid) if self.redis.process else None
        return CpuMeter(
            {
                "server_cpu_s": self.server.processes,
                "load_cpu_s": lambda: [self.load.psutil],
                "redis_cpu_s": lambda: [redis_process] if redis_process else [],
                "publisher_cpu_s": lambda: [psutil.Process()],
            }
        )


def measure(design: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Everything about one design, with its own redis-server and server process."""
    workers = args.workers if design == "hub-N" else 1
    row: dict[str, Any] = {"design": design, "workers": workers}
    with RedisServer(extra=["--maxclients", "50000"]) as redis_server:
        try:
            checkout = args.baseline if design == "baseline" else ROOT
            server = Server(design, workers, redis_server.url, workdir, checkout)
        except (ServerFailed, TimeoutError) as exc:
            say(f"{design}: the server did not start: {exc}")
            return {**row, "error": f"the server did not start: {exc}"}
        try:
            return {**row, **_measure(design, args, redis_server, server)}
        except ServerFailed as exc:
            say(f"{design}: {exc}")
            return {**row, "error": str(exc)}
        finally:
            server.stop()


def _measure(
    design: str, args: argparse.Namespace, redis_server: RedisServer, server: Server
) -> dict[str, Any]:
    per_task = max(1, streams_for(design, args.subscribers) // args.tasks)
    tasks = [f"bench-{design}-{i}" for i in range(args.tasks)]
    config = NotifierConfig(gateway=GatewayConfig(secret=SECRET))
    tokens = {t: issue_token(t, config=config) for t in tasks}
    time.sleep(1)  # let the server settle before its baseline RSS
    rss_before = server.rss()
    say(f"{design}: opening {per_task * len(tasks):,} streams")
    load = LoadClient(server.port, tasks, tokens, per_task)
    if not load.opened["open"]:
        load.close()
        raise ServerFailed(f"no stream opened; its log: {server.log_path}")
    publisher = Notifier(
        NotifierConfig(
            redis=RedisConfig(url=redis_server.url),
            queue=QueueConfig(progress_interval=0.0),
            history=HistoryConfig(enabled=True, maxlen=1000),
            logging=LoggingConfig(level="warning"),  # stdout is the report's
        )
    )
    publisher.start()
    bench = Bench(design, args, server, redis_server, load, publisher, tasks, per_task)
    try:
        return {
            **idle(bench, rss_before),
            # The search first: the row overloads most designs, and a server that was overloaded
            # may not be what it was (the peer's was not: a core busy, next to nothing sent).
            "search": search(bench) if args.search else None,
            **row_at_rate(bench),
        }
    finally:
        load.close()
        publisher.close()


SPARE_FILES = 1000  # the server's own: its listening socket, Redis, logs, imports


def streams_for(design: str, subscribers: int) -> int:
    """The streams a design is given: all of them, but for a peer that holds two descriptors
    per page (the client's socket and its own Redis connection), as many as its open-file
    limit allows: past it, accept() fails, and the process stops delivering at all."""
    if design not in PEERS:
        return subscribers
    return min(subscribers, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - SPARE_FILES) // 2)


def idle(bench: Bench, rss_before: int) -> dict[str, Any]:
    """The figures with the streams open and quiet; then every stream is shown live (an event
    on each task until each stream has one) before anything is measured."""
    opened = bench.load.opened
    time.sleep(2)
    rss_idle = bench.server.rss()
    figures = {
        "subscribers": opened["open"],
        "connect_failures": opened["refused"],
        "redis_connections": bench.server.redis_connections(bench.redis.port),
        "streams_per_worker": bench.server.streams_per_worker(),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_idle_mb": round(rss_idle / 2**20, 1),
        "rss_per_subscriber_kb": round((rss_idle - rss_before) / max(1, opened["open"]) / 1024, 1),
    }
    deadline, status = time.monotonic() + 60, {"live": 0}
    while time.monotonic() < deadline:
        for task in bench.tasks:
            bench.publisher.publish(task, "tick", {"warmup": True})
        bench.publisher.flush(10)
        time.sleep(0.5)
        status = bench.load.ask("status")
        if status["live"] >= status["open"]:
            break
    figures["live_before_row"] = status["live"]
    return figures


def row_at_rate(bench: Bench) -> dict[str, Any]:
    args = bench.args
    profile = None
    if args.profile and bench.design == "hub-1":
        seconds = min(args.profile_seconds, args.seconds)
        profile = Profile(bench.server.process.pid, seconds, args.profile_native)
    say(f"{bench.design}: {args.rate:,.0f} events/s for {args.seconds} s")
    row = probe(bench, args.rate, args.seconds, profile)
    if profile is not None:
        row["profile"] = profile.finish()
    return row


def probe(
    bench: Bench, rate: float, seconds: float, profile: Profile | None = None
) -> dict[str, Any]:
    """``rate`` events/s for ``seconds`` on the open streams; what arrived, and the CPU spent
    over the publishing and the drain after it."""
    reset = bench.load.ask("reset")
    meter = bench.meter()
    if profile is not None:
        profile.start()
    by_task = publish(bench.publisher, bench.tasks, rate, seconds)
    published_at = time.time()
    bench.publisher.flush(30)
    published = sum(by_task.values())
    expected = sum(n * reset["open_by_task"].get(task, 0) for task, n in by_task.items())
    drain(bench.load, expected, timeout=bench.args.drain_seconds)
    figures = bench.load.ask("figures")
    held = (
        figures["p99_ms"] <= bench.args.budget_ms
        and figures["received"] == expected
        and not figures["lost"]
    )
    return {
        "rate": rate,
        "seconds": seconds,
        "published": published,
        "deliveries_expected": expected,
        "deliveries_received": figures["received"],
        "delay_p50_ms": figures["p50_ms"],
        "delay_p99_ms": figures["p99_ms"],
        "delay_max_ms": figures["max_ms"],
        "streams_open": reset["open"],
        "streams_reopened": reset["reopened"],
        "streams_lost": figures["lost"],
        "overflows": figures["overflows"],
        # after the last publishing call, until the last delivery arrived: the backlog
        "drained_s": round(max(0.0, figures["last_at"] - published_at), 1),
        **meter.seconds(),
        "held": held,
    }


def publish(publisher: Notifier, tasks: list[str], rate: float, seconds: float) -> Counter[str]:
    """``rate`` events/s over the tasks in turn; the number the publisher accepted, by task."""
    started = time.monotonic()
    sent, accepted = 0, Counter[str]()
    total = max(len(tasks), int(rate * seconds))
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            task = tasks[sent % len(tasks)]
            accepted[task] += publisher.publish(task, "tick", {"seq": sent})
            sent += 1
        pause = started + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return accepted


def drain(load: LoadClient, expected: int, timeout: float, quiet: float = 2.0) -> None:
    """Until every delivery arrived, or none did for ``quiet`` seconds, for ``timeout`` at
    most. A server that falls behind takes long to catch up, and must before the next probe."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        received = load.ask("status")["received"]
        if received >= expected:
            return
        if received != last:
            last, since = received, time.monotonic()
        elif time.monotonic() - since > quiet:
            return
        time.sleep(0.1)


def search(bench: Bench) -> dict[str, Any]:
    """The highest rate that holds the budget: doubling up, then bisecting."""
    args = bench.args
    probes: list[dict[str, Any]] = []

    def holds(rate: float) -> bool:
        say(f"{bench.design}: probe at {rate:,.0f} events/s")
        probes.append(probe(bench, rate, args.probe_seconds))
        p = probes[-1]
        got, expected = p["deliveries_received"], p["deliveries_expected"]
        say(f"  p99 {p['delay_p99_ms']} ms, {got:,} of {expected:,} deliveries")
        return bool(p["held"])

    good, bad, rate = 0.0, None, float(args.search_from)
    while rate <= args.search_max:
        if not holds(rate):
            bad = rate
            break
        good, rate = rate, rate * 2
    for _ in range(args.search_steps if bad is not None else 0):
        assert bad is not None
        middle = float(round((good + bad) / 2))
        if middle in (good, bad):
            break
        if holds(middle):
            good = middle
        else:
            bad = middle
    return {
        "best_rate": good,
        "best_deliveries_per_s": good
        * sum(bench.load.opened["open_by_task"].values())
        / len(bench.tasks),
        "first_failing_rate": bad,
        "probes": probes,
    }


# The profile --------------------------------------------------------------------------------

# (what it is, pieces of a frame's text), counted once a stack has any of them anywhere. The
# gateway changes: a name that is gone counts 0, which the report shows as such.
NAMED_FRAMES = [
    (
        "socket writes (transport.write: the gateway's sink, or uvicorn's send)",
        ("_Socket.write (", "send (uvicorn/protocols/http/", "UVStream.write", "uv_try_write"),
    ),
    ("serve_sse: each stream's own SSE loop", ("serve_sse (",)),
    ("Feed._read: a task's stream read and hand-on", ("_read (notifier/gateway/feeds.py)",)),
    ("Subscriber.push: one subscriber's buffer or socket", ("push (notifier/gateway/subscr",)),
    ("history reads (XRANGE)", ("(notifier/gateway/history.py)",)),
    ("pub/sub replies (shards, link)", ("(notifier/gateway/shards.py)", "(notifier/link.py)")),
    ("the heartbeat timer (Hub._beat)", ("_beat (notifier/gateway/hub.py)",)),
    (
        "HTTP requests (parsing, the door)",
        (
            "(notifier/gateway/protocol.py)",
            "(notifier/gateway/door.py)",
            "(uvicorn/protocols/http/httptools_impl.py)",
        ),
    ),
]
FRAME_TEXT = re.compile(r"^(?P<name>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")


class Profile:
    """``py-spy record`` on a process and its children, for a few seconds."""

    def __init__(self, pid: int, seconds: float, native: bool) -> None:
        self.pid = pid
        self.seconds = max(1, round(seconds))
        self.native = native
        self.output = RESULTS / "gateway-profile-hub-1.txt"
        self.process: subprocess.Popen[str] | None = None
        self.error: str | None = None

    def start(self) -> None:
        binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if binary is None:
            self.error = "py-spy is not installed (pip install py-spy; the bench extra has it)"
            return
        args = [binary, "record", "--pid", str(self.pid), "--subprocesses", "--rate", "100"]
        args += ["--duration", str(self.seconds), "--format", "raw", "--output", str(self.output)]
        args += ["--native"] if self.native else ["--nonblocking"]
        self.output.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def finish(self) -> dict[str, Any]:
        if self.process is not None:
            try:
                said, _ = self.process.communicate(timeout=self.seconds + 60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                said, _ = self.process.communicate()
            if self.process.returncode or not self.output.exists():
                lines = said.strip().splitlines() or ["no output"]
                self.error = (
                    f"py-spy could not record (exit {self.process.returncode}): {lines[-1]}"
                )
        if self.error is not None:
            say(self.error)
            return {"error": self.error}
        return {
            "file": str(self.output.relative_to(ROOT)),
            "seconds": self.seconds,
            "native": self.native,
            **summarize(self.output),
        }


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Samples by leaf frame, and by named frames anywhere in the stack (py-spy's raw format:
    ``frame;frame;...;leaf count`` a line)."""
    leaves: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [short_frame(f) for f in stack.split(";")]
        samples = int(count)
        total += samples
        leaves[frames[-1]] += samples
        for label, pieces in NAMED_FRAMES:
            if any(piece in frame for frame in frames for piece in pieces):
                anywhere[label] += samples

    def share(n: int) -> float:
        return round(100 * n / max(1, total), 1)

    return {
        "samples": total,
        "leaves": [
            {"frame": f, "samples": n, "share": share(n)} for f, n in leaves.most_common(top)
        ],
        "named": [
            {"frame": label, "samples": anywhere[label], "share": share(anywhere[label])}
            for label, _ in NAMED_FRAMES
        ],
    }


def short_frame(frame: str) -> str:
    """``name (path:line)`` as ``name (path)``, the path from site-packages or the checkout."""
    match = FRAME_TEXT.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["path"]
    for anchor in ("site-packages/", f"{ROOT}/", "lib/python3."):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return f"{match['name']} ({path})"


# The report ---------------------------------------------------------------------------------


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    per_task = max(1, args.subscribers // args.tasks)
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores: "
        f"{per_task * args.tasks:,} SSE streams over {args.tasks} tasks, {args.rate:,.0f} "
        f"events/s ({args.rate * per_task:,.0f} deliveries/s) for {args.seconds} s per row.",
        f"The load generator, redis-server and the publisher share the {os.cpu_count()} cores "
        "with the server, and take CPU from it: their CPU seconds (over the publishing and the "
        "drain after it) are beside its own. Backlog s: from the last publishing call to the "
        "last delivery.",
        *baseline_line(args),
        *peer_line(rows, args),
        "",
        "| design | workers | streams | received / expected | p50 ms | p99 ms | max ms "
        "| backlog s | server CPU s | load CPU s | redis CPU s | publisher CPU s | Redis conns "
        "| RSS/idle stream KB | streams per worker |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['design']} | {r['workers']} | {r['error']} |" + " |" * 12)
            continue
        profiled = " (profiled)" if r.get("profile") and "error" not in r["profile"] else ""
        lines.append(
            f"| {r['design']}{profiled} | {r['workers']} | {r['subscribers']:,} "
            f"| {r['deliveries_received']:,} / {r['deliveries_expected']:,} "
            f"| {r['delay_p50_ms']} | {r['delay_p99_ms']} | {r['delay_max_ms']} "
            f"| {r['drained_s']} "
            f"| {r['server_cpu_s']} | {r['load_cpu_s']} | {r['redis_cpu_s']} "
            f"| {r['publisher_cpu_s']} | {r['redis_connections']:,} "
            f"| {r['rss_per_subscriber_kb']} | {' + '.join(map(str, r['streams_per_worker']))} |"
        )
    lines += search_table(rows, args)
    for r in rows:
        if r.get("profile"):
            lines += profile_table(r["design"], r["profile"])
    return "\n".join(lines)


def peer_line(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    fewer = [r["design"] for r in rows if r["design"] in PEERS and "error" not in r]
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if not fewer or streams_for(fewer[0], args.subscribers) == args.subscribers:
        return []
    return [
        f"{', '.join(fewer)}: two open files per page, under this machine's limit of "
        f"{limit:,} open files per process: {streams_for(fewer[0], args.subscribers):,} streams."
    ]


def baseline_line(args: argparse.Namespace) -> list[str]:
    if args.baseline is None:
        return []
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], cwd=args.baseline, capture_output=True, text=True
    ).stdout.strip()
    return [f"baseline: `notifier gateway` with one worker from {args.baseline} ({commit})."]


def search_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    searched = [r for r in rows if r.get("search")]
    if not searched:
        return []
    lines = [
        "",
        f"The highest rate each holds: p99 within {args.budget_ms:g} ms and every delivery, "
        f"probes of {args.probe_seconds} s on the same streams (doubling from "
        f"{args.search_from:g} events/s, then {args.search_steps} bisections).",
        "",
        "| design | best events/s | deliveries/s | first failing events/s "
        "| probes: events/s p99 ms |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in searched:
        s = r["search"]
        probes = ", ".join(
            f"{p['rate']:,.0f}: {p['delay_p99_ms']}{'' if p['held'] else ' ✗'}" for p in s["probes"]
        )
        failing = "none" if s["first_failing_rate"] is None else f"{s['first_failing_rate']:,.0f}"
        lines.append(
            f"| {r['design']} | {s['best_rate']:,.0f} | {s['best_deliveries_per_s']:,.0f} "
            f"| {failing} | {probes} |"
        )
    return lines


def profile_table(design: str, profile: dict[str, Any]) -> list[str]:
    if "error" in profile:
        return ["", f"Profile of {design}: {profile['error']}."]
    busy = 100 * profile["samples"] / (100 * profile["seconds"])
    lines = [
        "",
        f"Profile of {design} (py-spy, the first {profile['seconds']} s of its row, "
        f"{'native frames, pausing it' if profile['native'] else 'non-blocking'}; "
        f"{profile['samples']:,} samples of busy threads at 100 a second, about {busy:.0f}% of "
        f"one core; {profile['file']}). A leaf `Runner.run` is time below any Python frame: "
        "uvloop's own C code (polling, socket I/O, callbacks).",
        "",
        "| leaf function | share % |",
        "| --- | ---: |",
        *(f"| `{leaf['frame']}` | {leaf['share']} |" for leaf in profile["leaves"]),
        "",
        "| anywhere in the stack | share % |",
        "| --- | ---: |",
        *(f"| {named['frame']} | {named['share']} |" for named in profile["named"]),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the rows")
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing per row")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="hub-N's (default: cores)"
    )
    parser.add_argument(
        "--designs",
        default=",".join(DESIGNS),
        help=f"in this order, from {', '.join((*DESIGNS, *PEERS, 'baseline'))} "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--baseline",
        type=lambda text: Path(text).resolve(),
        help="a checkout of an earlier commit: the design 'baseline' runs its gateway",
    )
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--probe-seconds", type=float, default=8.0)
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=180.0,
        help="at most, after publishing, for the deliveries still on their way",
    )
    parser.add_argument("--budget-ms", type=float, default=50.0, help="the p99 a rate must hold")
    parser.add_argument("--search-from", type=float, default=100.0, help="events/s")
    parser.add_argument("--search-max", type=float, default=25_600.0, help="events/s")
    parser.add_argument("--search-steps", type=int, default=3, help="bisections")
    parser.add_argument("--profile", action="store_true", help="py-spy on hub-1's row")
    parser.add_argument("--profile-seconds", type=float, default=5.0)
    parser.add_argument("--profile-native", action="store_true", help="native frames (pauses)")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        run_load()
        return
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = set(designs) - {*DESIGNS, *PEERS, "baseline"}
    if unknown:
        parser.error(f"unknown designs: {', '.join(sorted(unknown))}")
    if "baseline" in designs and args.baseline is None:
        parser.error("the design 'baseline' needs --baseline PATH, a checkout to run it from")
    raise_file_limit()
    workdir = RESULTS / "gateway"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [measure(design, args, workdir) for design in designs]
    table = report(rows, args)
    print(table)
    (RESULTS / "gateway.md").write_text(table + "\n")
    run = {k: v for k, v in vars(args).items() if k != "load"}
    figures = {"run": {**run, "cores": os.cpu_count()}, "designs": rows}
    (RESULTS / "gateway.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")


def raise_file_limit() -> None:
    """Enough open files for the servers, Redis and the load generator (inherited by each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        wanted = max(hard, FILES)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))  # as root, above the hard
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    main()
