"""Judging the heartbeat snapshots: each process healthy or not, with reasons, and the report.

Read by the health server on each request (``server``) and by the Prometheus collector
(``metrics``); the snapshots themselves are ``snapshots``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from notifier.health.snapshots import FILE_NAME, Snapshot
from notifier.logs import Logger

NO_REPORT = "no notifier has reported yet"


@dataclass(frozen=True, slots=True)
class ProcessHealth:
    """A snapshot judged at one moment: healthy when ``reasons`` is empty."""

    snapshot: Snapshot
    heartbeat_age: float
    reasons: list[str]

    @property
    def thread_alive(self) -> bool:
        return self.heartbeat_age <= self.snapshot.stale_after

    def to_dict(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "pid": s.pid,
            "notifier": s.notifier,
            "healthy": not self.reasons,
            "reasons": self.reasons,
            "thread_alive": self.thread_alive,
            "heartbeat_at": s.heartbeat_at,
            "heartbeat_age": round(self.heartbeat_age, 3),
            "loop_lag": round(s.loop_lag, 4),
            "connected": s.connected,
            "last_error": s.last_error,
            "last_error_at": s.last_error_at,
            "queue_size": s.queue_size,
            "queue_capacity": s.queue_capacity,
            "pending": s.pending,
            "published": s.published,
            "dropped": s.dropped,
            "dropped_by_reason": s.dropped_by_reason,
            "coalesced": s.coalesced,
            "reconnects": s.reconnects,
            "last_publish_at": s.last_publish_at,
            "redis_url": s.redis_url,
            "redis": s.topology,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Every live notifier's health; healthy when there is at least one and all are."""

    processes: list[ProcessHealth]

    @property
    def healthy(self) -> bool:
        return bool(self.processes) and not self.reasons

    @property
    def reasons(self) -> list[str]:
        if not self.processes:
            return [NO_REPORT]
        return [f"pid {p.snapshot.pid}: {r}" for p in self.processes for r in p.reasons]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "reasons": self.reasons,
            "processes": [p.to_dict() for p in self.processes],
        }


def judge(snapshot: Snapshot, now: float) -> ProcessHealth:
    """Apply the health rules to one snapshot."""
    age = max(0.0, now - snapshot.heartbeat_at)
    reasons = []
    if age > snapshot.stale_after:
        # The other figures are as old as the heartbeat: only this reason is known to be true.
        reasons.append(
            f"notifier thread dead or event loop blocked (last heartbeat {age:.1f}s ago)"
        )
    else:
        if snapshot.loop_lag > snapshot.max_loop_lag:
            reasons.append(
                f"event loop lagging ({snapshot.loop_lag:.2f}s late, "
                f"limit {snapshot.max_loop_lag}s)"
            )
        if not snapshot.connected:
            reasons.append(
                f"redis unreachable: {snapshot.last_error}"
                if snapshot.last_error
                else "redis not connected yet"
            )
    return ProcessHealth(snapshot, age, reasons)


def read_report(directory: str, log: Logger) -> Report:
    """Read and judge every snapshot in ``directory``; delete those of processes that are gone."""
    processes = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    for name in names:
        match = FILE_NAME.match(name)
        if match is None:
            continue
        path = os.path.join(directory, name)
        if not pid_alive(int(match[1])):
            with contextlib.suppress(FileNotFoundError):  # another request got there first
                os.unlink(path)
            continue
        if match[3]:
            continue  # being written
        try:
            with open(path, "rb") as fh:
                snapshot = Snapshot.from_dict(json.load(fh))
        except FileNotFoundError:
            continue  # its notifier closed just now
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.debug("health_snapshot_unreadable", path=path, error=str(exc))
            continue
        processes.append(judge(snapshot, time.time()))
    processes.sort(key=lambda p: (p.snapshot.pid, p.snapshot.notifier))
    return Report(processes)


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists and has not exited (zombies count as gone)."""
    if pid <= 0:
        return False  # kill(0, ...) would mean our own process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it belongs to another user
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: the signal check is all there is
    # A zombie has exited; its parent just has not reaped it yet.
    return state != b"Z"
