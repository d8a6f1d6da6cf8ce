"""What Redis can take and what a subscriber receives: the ceiling that throughput figures are read
against (``redis-benchmark PUBLISH -P 256``, a live subscriber attached) and the counting
subscriber itself, in a process of its own. Used by ``make bench`` and ``make bench-compare``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

# The payload every bench publishes (run.py, compare_side.py, breakdown.py): a typical small one.
EVENT = {"step": "review", "attempt": 3, "note": "réexamen demandé"}


class CountingSubscriber:
    """bench/subscriber.py in count mode, in its own process: counts messages until END."""

    def __init__(self, port: int, channel: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.subscriber", str(port), channel, "count"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "subscribed": confirmed before anything is published

    def wait(self) -> tuple[int, float]:
        """Messages received before END, and when END arrived."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        arrived = time.perf_counter()
        self.process.wait(10)
        self.process.stdout.close()
        return int(line), arrived


class RedisServerClient:
    def __init__(self, port: int) -> None:
        import redis

        self.client = redis.Redis(port=port)

    def numsub(self, channel: str) -> int:
        return int(self.client.pubsub_numsub(channel)[0][1])

    def publish(self, channel: str, message: str) -> None:
        self.client.publish(channel, message)


def redis_benchmark_ceiling(port: int, events: int) -> float:
    """redis-benchmark PUBLISH, pipelined, one connection, same payload size, live subscriber."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan")
    subscriber = CountingSubscriber(port, "task:tp")
    payload = json.dumps(
        {
            "event_id": "x" * 20,
            "type": "failed",
            "task_id": "tp",
            "timestamp": "2026-11-28T05:00:00.000000Z",
            "data": EVENT,
        }
    )
    done = subprocess.run(
        [
            binary,
            "-p",
            str(port),
            "-n",
            str(events),
            "-P",
            "256",
            "-c",
            "1",
            "--csv",
            "PUBLISH",
            "task:tp",
            payload,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    RedisServerClient(port).publish("task:tp", "END")
    subscriber.wait()
    # redis-benchmark does not escape the quotes of the command it names in the first field, so
    # count fields from the end: "rps" is followed by six latency columns.
    last = done.stdout.strip().splitlines()[-1]
    return float(last.rsplit(",", 7)[1].strip('"'))
