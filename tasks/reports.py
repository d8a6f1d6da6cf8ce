"""Each worker process's final notifier counters, appended to one file, one whole line each.

The demo and the tests read the counters of a worker's processes here rather than from its log
stream. Prefork children exit at about the same time; each appends its line in a single
``write()`` to a file opened with ``O_APPEND``, and the kernel never interleaves two writes to a
regular file, whatever their size or the interpreter's buffering mode.

A worker writes reports only when ``$TASKS_NOTIFIER_REPORT`` names the file.
"""

from __future__ import annotations

import json
import os
import weakref
from typing import Any

from notifier import Notifier

ENV_REPORT_FILE = "TASKS_NOTIFIER_REPORT"
FIELDS = (
    "accepted",
    "published",
    "pending",
    "coalesced",
    "dropped",
    "dropped_by_reason",
    "reconnects",
)
_reporting: weakref.WeakSet[Notifier] = weakref.WeakSet()


def report_at_close(notifier: Notifier) -> None:
    """When ``notifier`` closes, append its final counters to the report file, if one is set.
    Once per notifier, however often it is asked (the solo pool sends both worker signals)."""
    path = os.environ.get(ENV_REPORT_FILE)
    if path and notifier not in _reporting:
        _reporting.add(notifier)
        notifier.on_close(lambda: append_report(path, notifier.stats()))


def append_report(path: str, stats: dict[str, Any]) -> None:
    line = {
        "pid": os.getpid(),
        "event_id_prefix": stats["event_id_prefix"],  # tells this process's events from others'
        **{key: stats[key] for key in FIELDS},
    }
    data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)  # one call: the line lands whole, never amid another process's
    finally:
        os.close(fd)


def read_reports(path: str) -> list[dict[str, Any]]:
    """Every report in the file, in the order they were written; [] when none was."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []
