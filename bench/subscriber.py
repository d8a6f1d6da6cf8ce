"""A subscriber for the benchmarks, run as its own process so that it has a core of its own.

It subscribes to one channel with a raw socket and hiredis (replies parsed in C, read 64 KiB at a
time), which keeps up with several hundred thousand messages a second where redis-cli piped into
awk managed about 56,000 on this machine. Two modes:

- ``latency``: for each message, now - data["sent_ns"] on CLOCK_MONOTONIC (shared by every process
  on the machine); on {"end": true} it prints the latencies' summary as JSON and exits.
- ``count``: counts messages; on the message ``END`` it prints the count and exits.

    python -m bench.subscriber PORT CHANNEL [latency|count]
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import time

import hiredis


def main(port: int, channel: str, mode: str = "latency") -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    reader = hiredis.Reader()
    name = channel.encode()
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(name), name))
    latencies: list[int] = []
    print("subscribed", flush=True)  # the harness starts publishing after this line
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        now = time.monotonic_ns()
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not isinstance(reply, list) or reply[0] != b"message":
                continue
            if mode == "count":
                if reply[2] == b"END":
                    print(len(latencies), flush=True)
                    return
                latencies.append(0)
                continue
            event = json.loads(reply[2])
            payload = event.get("data", event)
            if payload.get("end"):
                ordered = sorted(latencies)
                print(
                    json.dumps(
                        {
                            "count": len(ordered),
                            "p50_us": percentile(ordered, 50) / 1000,
                            "p99_us": percentile(ordered, 99) / 1000,
                            "max_us": ordered[-1] / 1000 if ordered else 0,
                            "mean_us": statistics.fmean(ordered) / 1000 if ordered else 0,
                        }
                    ),
                    flush=True,
                )
                return
            latencies.append(now - payload["sent_ns"])


def percentile(ordered: list[int], q: float) -> float:
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))])


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], *sys.argv[3:])
