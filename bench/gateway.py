"""`make bench-gateway`: thousands of SSE subscribers on one gateway process, against one
subscription per page, side by side in one run.

Each design runs as its own server process on uvicorn, in front of one redis-server:

- **hub**: ``notifier gateway`` (one pub/sub connection per process, fanned out in it);
- **per page**: the same SSE over ``notifier.consumer.subscribe()``, two Redis connections for
  every open page (what a gateway built on the consumer API does).

A load generator in a process of its own opens the SSE streams (raw asyncio sockets) on
``--tasks`` tasks, measures each event's delay from its ``timestamp`` (set by the publishing call)
to its arrival, and reports; the publisher sends ``--rate`` events/s spread over the tasks.
Figures: Redis connections held by the server, its RSS per idle subscriber (RSS with the streams
open and quiet, minus RSS before, divided by their number), and the delay's p50/p99/max.

    python -m bench.gateway [--subscribers 10000] [--baseline 1000] [--tasks 100]
                            [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from notifier import Notifier, NotifierConfig
from notifier.config import GatewayConfig, HistoryConfig, QueueConfig, RedisConfig
from notifier.gateway import issue_token
from notifier.testing import RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-gateway-secret-0123456789abcdef"


# The per-page design, for comparison ------------------------------------------------------


def per_page_app() -> Any:
    """SSE with one ``notifier.consumer.subscribe()`` (two Redis connections) per open page."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from notifier import load_config
    from notifier.consumer import subscribe

    config = load_config()

    async def events(request: Request) -> StreamingResponse:
        async def frames() -> Any:
            yield b"retry: 2000\n\n"
            async for event in subscribe(request.path_params["task_id"], config=config):
                yield b"event: %s\ndata: %s\n\n" % (
                    event["type"].encode(),
                    orjson.dumps(event),  # compact, as the gateway sends it
                )

        return StreamingResponse(frames(), media_type="text/event-stream")

    return Starlette(routes=[Route("/tasks/{task_id:path}/events", events)])


# The load generator process -----------------------------------------------------------------


class Load:
    """The load generator's streams and what they received. A Protocol per stream, not a
    StreamReader: at 100,000 events/s the client's own cost must stay far below the server's."""

    def __init__(self, port: int, tokens: dict[str, str]) -> None:
        self.port = port
        self.tokens = tokens
        self.delays: list[float] = []
        self.received = 0
        self.connected = 0
        self.failed = 0

    async def run(self, tasks: list[str], per_task: int) -> None:
        """Open the streams, say "open", then count until told "stop"; print the figures."""
        loop = asyncio.get_running_loop()
        transports = []
        for i, task in enumerate(tasks * per_task):
            try:
                transport, _ = await loop.create_connection(
                    lambda: _Stream(self), "127.0.0.1", self.port
                )
            except OSError:
                self.failed += 1
                continue
            token = self.tokens[task]
            request = f"GET /tasks/{task}/events?token={token} HTTP/1.1\r\nHost: b\r\n\r\n"
            transport.write(request.encode())
            transports.append(transport)
            self.connected += 1
            if i % 200 == 199:
                await asyncio.sleep(0.05)  # ramp up: the server's accept backlog is finite
        await asyncio.sleep(1)
        print(json.dumps({"open": self.connected, "failed": self.failed}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        print(json.dumps(self.figures()), flush=True)
        for transport in transports:
            transport.close()

    def figures(self) -> dict[str, float]:
        delays = sorted(self.delays) or [0.0]

        def at(q: float) -> float:
            return round(delays[min(len(delays) - 1, int(len(delays) * q))] * 1000, 1)

        return {
            "received": self.received,
            "sampled": len(self.delays),
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": at(1.0),
        }


STAMP = b'"timestamp":"'


class _Stream(asyncio.Protocol):
    """Counts the events of one SSE stream, and times the first event of each read: the one
    that waited longest of those that came together."""

    def __init__(self, load: Load) -> None:
        self.load = load

    def data_received(self, data: bytes) -> None:
        now = time.time()
        events = data.count(b"\ndata: {") + data.startswith(b"data: {")
        if not events:
            return
        self.load.received += events
        at = data.find(STAMP)
        if at >= 0:
            stamp = data[at + len(STAMP) : at + len(STAMP) + 27].decode()
            sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            self.load.delays.append(now - sent)


# The run ------------------------------------------------------------------------------------


def start_server(kind: str, redis_url: str, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    config = workdir / f"{kind}.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\n[history]\nenabled = true\n'
        f"[gateway]\nport = {port}\nmax_connections = 100000\n"
    )
    env = {**os.environ, "NOTIFIER_CONFIG": str(config), "NOTIFIER_GATEWAY_SECRET": SECRET}
    if kind == "hub":
        args = [sys.executable, "-m", "notifier.cli", "gateway"]
    else:
        args = [sys.executable, "-m", "uvicorn", "--factory", "bench.gateway:per_page_app"]
        args += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        args += ["--backlog", "4096"]
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            with __import__("socket").create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(answers, 30)
    return process


def redis_clients(server: RedisServer) -> int:
    with server.client() as client:
        return len(client.client_list()) - 1  # not this one


def measure(
    kind: str, subscribers: int, rate: float, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    extra = ["--maxclients", "50000"]
    with RedisServer(extra=extra) as server:
        port = free_port()
        process = start_server(kind, server.url, workdir, port)
        try:
            return _measure(kind, subscribers, rate, args, server, process, port)
        finally:
            process.terminate()
            process.wait(30)


def _measure(
    kind: str,
    subscribers: int,
    rate: float,
    args: argparse.Namespace,
    server: RedisServer,
    process: subprocess.Popen[bytes],
    port: int,
) -> dict[str, Any]:
    config = NotifierConfig(gateway=GatewayConfig(secret=SECRET))
    tasks = [f"bench-{kind}-{i}" for i in range(args.tasks)]
    tokens = {t: issue_token(t, config=config) for t in tasks}
    server_process = psutil.Process(process.pid)
    time.sleep(1)  # let the server settle before its baseline RSS
    rss_before = server_process.memory_info().rss
    generator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.gateway",
            "--load",
            str(port),
            str(subscribers // args.tasks),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert generator.stdin is not None and generator.stdout is not None
    generator.stdin.write(json.dumps({"tasks": tasks, "tokens": tokens}) + "\n")
    generator.stdin.flush()
    opened = json.loads(generator.stdout.readline())
    wait_until(lambda: redis_clients(server) >= 1, 30)
    time.sleep(2)  # idle: the streams are open and quiet
    rss_idle = server_process.memory_info().rss
    held = redis_clients(server)
    publisher = Notifier(
        NotifierConfig(
            redis=RedisConfig(url=server.url),
            queue=QueueConfig(progress_interval=0.0),
            history=HistoryConfig(enabled=True, maxlen=1000),
        )
    )
    publisher.start()
    interval = 1 / rate
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < args.seconds:
        publisher.publish(tasks[sent % len(tasks)], "tick", {"seq": sent})
        sent += 1
        pause = started + sent * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    publisher.flush(30)
    time.sleep(2)  # the last events on their way
    generator.stdin.write("stop\n")
    generator.stdin.flush()
    figures = json.loads(generator.stdout.readline())
    generator.wait(30)
    cpu = server_process.cpu_times()
    publisher.close()
    expected = sent * (subscribers // args.tasks)
    return {
        "design": kind,
        "rate": rate,
        "subscribers": opened["open"],
        "connect_failures": opened["failed"],
        "redis_connections": held - 1,  # the publisher's is not the server's
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_idle_mb": round(rss_idle / 2**20, 1),
        "rss_per_subscriber_kb": round((rss_idle - rss_before) / max(1, opened["open"]) / 1024, 1),
        "published": sent,
        "deliveries_expected": expected,
        "deliveries_received": figures["received"],
        "delay_p50_ms": figures["p50_ms"],
        "delay_p99_ms": figures["p99_ms"],
        "delay_max_ms": figures["max_ms"],
        "server_cpu_s": round(cpu.user + cpu.system, 1),
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores: "
        f"{args.tasks} tasks, {args.seconds} s of publishing per row.",
        "",
        "| design | SSE subscribers | events/s | deliveries/s | Redis connections "
        "| RSS per idle subscriber KB | deliveries received / expected | delay p50 ms "
        "| p99 ms | max ms | server CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        per_task = r["subscribers"] // args.tasks
        lines.append(
            f"| {r['design']} | {r['subscribers']:,} | {r['rate']:,.0f} "
            f"| {r['rate'] * per_task:,.0f} | {r['redis_connections']:,} "
            f"| {r['rss_per_subscriber_kb']} | {r['deliveries_received']:,} / "
            f"{r['deliveries_expected']:,} | {r['delay_p50_ms']} | {r['delay_p99_ms']} "
            f"| {r['delay_max_ms']} | {r['server_cpu_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1000, help="subscribers of each design")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--also-rate",
        type=float,
        action="append",
        default=[],
        help="run the --subscribers hub again at this rate (repeatable)",
    )
    parser.add_argument("--load", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        spec = json.loads(sys.stdin.readline())
        with_uvloop()
        # The client's own collector must not stall it: its pauses would count as the server's.
        gc.disable()
        asyncio.run(Load(args.load[0], spec["tokens"]).run(spec["tasks"], args.load[1]))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    workdir = RESULTS / "gateway"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [
        measure("per-page", args.baseline, args.rate, args, workdir),
        measure("hub", args.baseline, args.rate, args, workdir),
        measure("hub", args.subscribers, args.rate, args, workdir),
    ]
    rows += [measure("hub", args.subscribers, rate, args, workdir) for rate in args.also_rate]
    table = report(rows, args)
    print(table)
    (RESULTS / "gateway.md").write_text(table + "\n")
    (RESULTS / "gateway.json").write_text(json.dumps(rows, indent=2) + "\n")


def with_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    main()
