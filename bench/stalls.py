"""Telling the library's stalls from the machine's: call-time histograms, and a probe process.

A publish call costs microseconds, but on a shared 2-core machine any thread now and then loses
its core for a scheduler tick or more, so a single slow call says little by itself. The
``StallProbe`` runs in a process of its own and does nothing but sleep ``TICK`` at a time and
note how late it woke. Asked for a window (times on the system-wide monotonic clock, which both
processes share), it answers the lateness figures of that window: a worst publish call of 12 ms
beside a probe that woke 11 ms late in the same window is the machine's stall, not the library's.

    with StallProbe() as probe:
        started = time.monotonic()
        ... time the calls into a CallTimes ...
        machine = probe.window([(started, time.monotonic())])

    python -m bench.stalls   # the probe process itself (StallProbe starts it)
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from types import TracebackType
from typing import Any, Self

TICK = 0.001  # the probe's sleep: short enough to see a stall of a scheduler tick
# CallTimes buckets: 1 us wide below FINE_US, COARSE_US wide above, up to about 1 s; slower
# calls land in the last bucket (the max is kept exactly).
FINE_US, COARSE_US = 1000, 100
BUCKETS = FINE_US + 10_000


class CallTimes:
    """A fixed-size histogram of call durations: recording allocates nothing, so a long run's
    RSS measures the library, not the measurement."""

    def __init__(self) -> None:
        self.counts = array("Q", bytes(8 * BUCKETS))
        self.calls = 0
        self.max_ns = 0

    def add(self, duration_ns: int) -> None:
        us = duration_ns // 1000
        bucket = us if us < FINE_US else FINE_US + (us - FINE_US) // COARSE_US
        self.counts[min(bucket, BUCKETS - 1)] += 1
        self.calls += 1
        if duration_ns > self.max_ns:
            self.max_ns = duration_ns

    def figures(self) -> dict[str, float]:
        """p50, p99 (bucket upper bounds) and the exact max, in microseconds."""
        return {
            "calls": self.calls,
            "p50_us": self._quantile(0.50),
            "p99_us": self._quantile(0.99),
            "max_us": round(self.max_ns / 1000, 1),
        }

    def _quantile(self, q: float) -> float:
        if not self.calls:
            return 0.0
        wanted, seen = q * self.calls, 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= wanted:
                top = (
                    bucket + 1 if bucket < FINE_US else FINE_US + (bucket - FINE_US + 1) * COARSE_US
                )
                return float(min(top, round(self.max_ns / 1000, 1)))
        return round(self.max_ns / 1000, 1)


def _bucket_top_us(bucket: int) -> int:
    """The upper bound of a CallTimes bucket, in microseconds."""
    return bucket + 1 if bucket < FINE_US else FINE_US + (bucket - FINE_US + 1) * COARSE_US


class StallProbe:
    """The probe process: started on enter, stopped on exit."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.stalls"],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the stall probe did not start")
        return self

    def window(self, windows: list[tuple[float, float]]) -> dict[str, float]:
        """How late the probe woke within these (start, end) monotonic windows: p50, p99 and
        max in microseconds, and how many wake-ups that was."""
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise RuntimeError("the stall probe is not running")
        process.stdin.write(json.dumps(windows) + "\n")
        process.stdin.flush()
        answer: dict[str, float] = json.loads(process.stdout.readline())
        return answer

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The probe process ---------------------------------------------------------------------------


class _Wakeups:
    """When the probe woke, and how late, appended by the sampling loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = array("d")
        self.late = array("d")

    def figures(self, windows: list[tuple[float, float]]) -> dict[str, Any]:
        with self.lock:
            late = []
            for start, end in windows:
                first = bisect.bisect_left(self.at, start)
                last = bisect.bisect_right(self.at, end)
                late.extend(self.late[first:last])
        late.sort()
        if not late:
            return {"wakeups": 0, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}

        def at(q: float) -> float:
            return round(late[min(len(late) - 1, int(len(late) * q))] * 1e6, 1)

        return {"wakeups": len(late), "p50_us": at(0.50), "p99_us": at(0.99), "max_us": at(1.0)}


def _sample(wakeups: _Wakeups, stop: threading.Event) -> None:
    while not stop.is_set():
        due = time.monotonic() + TICK
        time.sleep(TICK)  # what is measured: how late a sleeping thread gets its core back
        now = time.monotonic()
        with wakeups.lock:
            wakeups.at.append(now)
            wakeups.late.append(max(0.0, now - due))


def main() -> None:
    """Sample until stdin closes; answer each line (a JSON list of windows) with figures."""
    wakeups, stop = _Wakeups(), threading.Event()
    sampler = threading.Thread(target=_sample, args=(wakeups, stop), daemon=True)
    sampler.start()
    print("ready", flush=True)
    for line in sys.stdin:
        windows = [(float(a), float(b)) for a, b in json.loads(line)]
        print(json.dumps(wakeups.figures(windows)), flush=True)
    stop.set()
    sampler.join()


if __name__ == "__main__":
    main()
