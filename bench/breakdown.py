"""Where a publish_failed call's time goes on the caller's thread: each step timed alone (the best
of several timeit repeats, so the machine's noise mostly falls away), beside the whole call and
the floor. No Redis is needed: the notifier points at a closed port, so its thread only
reconnects, and the outbox (sized for every call) is never taken from.

    python -m bench.breakdown [--calls N]
"""

from __future__ import annotations

import argparse
import timeit
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.delivery import EVENT
from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, RedisConfig
from notifier.events import JSON_OPTIONS, check_task_id, describe_error, encode_event
from notifier.handover import TERMINAL
from notifier.testing import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    calls = parser.parse_args().calls
    url = f"redis://127.0.0.1:{free_port()}"
    # Room for every call of every repeat: nothing is refused, nothing sent.
    n = Notifier(NotifierConfig(redis=RedisConfig(url=url), queue=QueueConfig(maxsize=calls * 40)))
    n.start()
    error = TimeoutError("review service did not answer")
    data = {**EVENT, "i": 1, "error": f"TimeoutError: {error}", "error_type": "TimeoutError"}
    payload = encode_event("tp", "failed", data, 65536)
    envelope = {"event_id": "0" * 16 + "-1", "type": "failed", "task_id": "tp", "data": data}
    names: dict[str, Any] = {
        "n": n, "error": error, "EVENT": EVENT, "data": data, "payload": payload,
        "check_task_id": check_task_id, "describe_error": describe_error,
        "encode_event": encode_event, "orjson": orjson, "JSON_OPTIONS": JSON_OPTIONS,
        "datetime": datetime, "UTC": UTC, "envelope": envelope, "TERMINAL": TERMINAL,
    }  # fmt: skip
    steps = [
        ("the whole call: n.publish_failed(task, error, **EVENT, i=1)",
         "n.publish_failed('tp', error, **EVENT, i=1)"),
        ("  the call's own **EVENT, i=1 (the caller builds the kwargs)",
         "(lambda **k: None)(**EVENT, i=1)"),
        ("  check_task_id (a set lookup once seen)", "check_task_id('tp')"),
        ("  describe_error: 'TimeoutError: ...' and its type", "describe_error(error)"),
        ("  encode_event: envelope, id, timestamp, orjson, checks, copy",
         "encode_event('tp', 'failed', data, 65536)"),
        ("    datetime.now(UTC)", "datetime.now(UTC)"),
        ("    orjson.dumps alone (timestamp included)",
         "orjson.dumps({**envelope, 'timestamp': datetime.now(UTC)}, option=JSON_OPTIONS)"),
        ("    the NaN check's scan for null", "payload.find(b'null')"),
        ("  the hand-over: ledger lock, outbox put, counters",
         "n._offer('tp', payload, TERMINAL)"),
    ]  # fmt: skip
    print(f"{'step':<66} {'us':>6}")
    for label, statement in steps:
        best = min(timeit.repeat(statement, globals=names, number=calls, repeat=5)) / calls
        print(f"{label:<66} {best * 1e6:6.3f}")
    n.close(timeout=0)


if __name__ == "__main__":
    main()
