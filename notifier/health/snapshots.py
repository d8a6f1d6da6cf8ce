"""Heartbeat snapshots: one small JSON file per notifier, written by it, read by the health server.

Every notifier process -- the one that serves the endpoint, a Celery prefork child, any forked
child -- writes ``<state_dir>/<pid>-<n>.json`` at each heartbeat of its notifier thread, atomically
(a temporary file, then ``os.replace``). The serving process reads the directory on each request
and judges each snapshot by its age and content. A process needs nothing from the server but the
directory's name, which a forked child inherits, so the picture stays right across forks: a new
child appears when it first writes, a child that exits removes its file, and the file of one that
was killed is deleted by the reader once its pid is gone.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from notifier.logs import Logger

if TYPE_CHECKING:
    from notifier.seams import NotifierView

# "<pid>-<n>.json", and the temporary file it is written through.
FILE_NAME = re.compile(r"^(\d+)-(\d+)\.json(\.tmp)?$")
_numbers = itertools.count(1)  # tells apart several notifiers of one process
_T = TypeVar("_T")
# The snapshot's fields that are the notifier's counters under the same name.
_FROM_STATS = (
    "connected",
    "last_error",
    "last_error_at",
    "queue_size",
    "queue_capacity",
    "pending",
    "published",
    "dropped",
    "dropped_by_reason",
    "coalesced",
    "reconnects",
    "last_publish_at",
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One notifier's figures at its last heartbeat, with the limits it is to be judged by."""

    pid: int
    notifier: int
    written_at: float
    heartbeat_at: float
    loop_lag: float
    connected: bool
    last_error: str | None  # already scrubbed of the Redis password by the notifier thread
    last_error_at: float | None  # when it happened; the error may be over (see connected)
    queue_size: int
    queue_capacity: int
    pending: int
    published: int
    dropped: int
    dropped_by_reason: dict[str, int]
    coalesced: int
    reconnects: int
    last_publish_at: float | None
    redis_url: str  # redacted
    topology: dict[str, Any]  # the router's status: master in use, failovers, nodes
    stale_after: float
    max_loop_lag: float

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Snapshot:
        """Parse what :meth:`to_json` wrote; ValueError, TypeError or KeyError if it is not one."""
        reasons = raw["dropped_by_reason"]
        if not isinstance(reasons, dict):
            raise TypeError("dropped_by_reason must be an object")
        return cls(
            pid=int(raw["pid"]),
            notifier=int(raw["notifier"]),
            written_at=float(raw["written_at"]),
            heartbeat_at=float(raw["heartbeat_at"]),
            loop_lag=float(raw["loop_lag"]),
            connected=bool(raw["connected"]),
            last_error=_optional(str, raw["last_error"]),
            last_error_at=_optional(float, raw["last_error_at"]),
            queue_size=int(raw["queue_size"]),
            queue_capacity=int(raw["queue_capacity"]),
            pending=int(raw["pending"]),
            published=int(raw["published"]),
            dropped=int(raw["dropped"]),
            dropped_by_reason={str(k): int(v) for k, v in reasons.items()},
            coalesced=int(raw["coalesced"]),
            reconnects=int(raw["reconnects"]),
            last_publish_at=_optional(float, raw["last_publish_at"]),
            redis_url=str(raw["redis_url"]),
            topology=dict(raw["topology"]),
            stale_after=float(raw["stale_after"]),
            max_loop_lag=float(raw["max_loop_lag"]),
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


def _optional(kind: Callable[[Any], _T], value: Any) -> _T | None:
    return None if value is None else kind(value)


class SnapshotWriter:
    """Writes one notifier's snapshot at each of its heartbeats.

    ``beat`` runs on the notifier thread (it is a heartbeat listener): it takes the ledger's lock
    for a moment and writes a few hundred bytes, never more. ``directory`` says where, at each
    beat, so that a writer follows a server that was restarted; None means nowhere.
    """

    def __init__(
        self,
        notifier: NotifierView,
        directory: Callable[[], str | None],
        log: Logger,
    ) -> None:
        # Weak: the notifier holds this writer (as a listener); the writer must not keep it alive.
        self._notifier = weakref.ref(notifier)
        self._directory = directory
        self._log = log
        self.number = next(_numbers)
        self._failing = False

    def beat(self, loop_lag: float) -> None:
        notifier, directory = self._notifier(), self._directory()
        if notifier is None or directory is None:
            return
        stats, health = notifier.stats(), notifier.config.health
        pid = os.getpid()  # not stats["pid"]: in a forked child it is the child that beats
        snapshot = Snapshot(
            pid=pid,
            notifier=self.number,
            written_at=time.time(),
            heartbeat_at=stats["heartbeat_at"] or time.time(),
            loop_lag=loop_lag,
            redis_url=notifier.config.redis.safe_url,
            topology=stats["redis"],
            stale_after=health.stale_after,
            max_loop_lag=health.max_loop_lag,
            **{name: stats[name] for name in _FROM_STATS},
        )
        path = os.path.join(directory, f"{pid}-{self.number}.json")
        try:
            with open(path + ".tmp", "wb") as fh:
                fh.write(snapshot.to_json())
            os.replace(path + ".tmp", path)  # readers see the old snapshot or the new, never half
        except OSError as exc:
            # Once per failure streak: this runs at every heartbeat.
            if not self._failing:
                self._log.warning("health_snapshot_failed", path=path, error=str(exc))
            self._failing = True
        else:
            self._failing = False

    def remove(self) -> None:
        """Delete this process's snapshot: the notifier closed or the process is exiting."""
        directory = self._directory()
        if directory is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, f"{os.getpid()}-{self.number}.json"))
