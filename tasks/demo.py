"""`make demo`: publish a few task notifications and show them arriving at a subscriber.

Uses $NOTIFIER_REDIS_URL when set; otherwise starts a throwaway redis-server on a free port.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

from notifier import Notifier, load_config
from notifier.testing import EventCollector, RedisServer


def main() -> int:
    with ExitStack() as stack:
        url = os.environ.get("NOTIFIER_REDIS_URL")
        if not url:
            url = stack.enter_context(RedisServer()).url
            os.environ["NOTIFIER_REDIS_URL"] = url
        config = load_config(None)
        collector = stack.enter_context(EventCollector(url))
        with Notifier(config) as n:
            for step in range(1, 4):
                n.publish_progress("demo-ok", step * 100 / 3, message=f"step {step}/3")
            n.publish_completed("demo-ok", result={"rows": 3})
            try:
                raise TimeoutError("review service did not answer")
            except TimeoutError as exc:
                n.publish_failed("demo-failing", exc)
        events = collector.wait_for(5)
        for e in events:
            print(f"{e['timestamp']}  {e['task_id']:<13} {e['type']:<10} {e['data']}")
        print(n.stats())
        return 0 if len(events) == 5 and n.stats()["published"] == 5 else 1


if __name__ == "__main__":
    sys.exit(main())
