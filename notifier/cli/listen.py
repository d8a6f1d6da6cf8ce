"""``notifier listen``: print a task's events (or every task's) as they arrive, and stay.

A lost connection, or a quiet one that stops answering its PING, is made again with the
``[reconnect]`` backoff for as long as it takes, until Ctrl-C, ``--count`` or ``--timeout``; each
outage is said on stderr when it starts and when it ends. Pub/sub keeps nothing: what was
published during an outage is not printed.

On a Redis Cluster the task's channel is sharded: ``listen`` SSUBSCRIBEs on the master that owns
its slot, and when the slot moves (the node sends ``sunsubscribe``) it subscribes again where the
slot lives now. Shard channels have no patterns, so ``--all`` is refused there.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import redis

from notifier.config import NotifierConfig
from notifier.config.redaction import describe, url_secrets
from notifier.consumer.clients import sync_client
from notifier.events import check_task_id
from notifier.exceptions import NotifierError
from notifier.naming import naming_for

HEALTH_CHECK_INTERVAL = 5.0  # seconds of quiet before the connection is PINGed


class Listener:
    """``listen``'s state across connections: what was printed, and the outage under way."""

    def __init__(
        self,
        config: NotifierConfig,
        task_id: str | None,
        count: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.config = config
        self.task_id = None if task_id is None else check_task_id(task_id)
        self.naming = naming_for(config)
        if self.naming.sharded and self.task_id is None:
            raise NotifierError(
                "listen --all needs a pattern subscription (PSUBSCRIBE), and a Redis Cluster's "
                "sharded channels have no patterns: name a task (notifier listen TASK_ID)"
            )
        self.count = count
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.received = 0
        self.outage_since: float | None = None
        self.last_error = ""

    def run(self) -> None:
        attempt = 0
        while not self._done():
            try:
                with _Subscription(self.config, self.task_id) as subscription:
                    self._connected(subscription.target)
                    attempt = 0
                    self._print_events(subscription.pubsub)
            except (redis.RedisError, OSError) as exc:
                self.last_error = redis_failure(self.config, exc)
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    say(f"{self.last_error} (reconnecting until Ctrl-C or --timeout)")
                _backoff(self.config, attempt, self.deadline)
                attempt += 1

    def verdict(self) -> int:
        """0, or NotifierError saying what fell short."""
        detail = f"; {self.last_error}" if self.outage_since is not None else ""
        if self.count is not None and self.received < self.count:
            raise NotifierError(
                f"{self.received} of {self.count} events arrived within {self.timeout}s{detail}"
            )
        if self.outage_since is not None:
            raise NotifierError(f"{self.last_error} (still unreachable after {self.timeout}s)")
        return 0

    def _done(self) -> bool:
        if self.count is not None and self.received >= self.count:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _connected(self, target: str) -> None:
        if self.outage_since is None:
            say(f"listening on {target} at {self.config.redis.safe_url}")
        else:
            took = time.monotonic() - self.outage_since
            say(f"reconnected after {took:.1f}s; listening on {target}")
        self.outage_since = None

    def _print_events(self, pubsub: Any) -> None:
        """Print messages as they arrive until the count or the deadline; a lost connection
        raises."""
        while not self._done():
            wait = 1.0 if self.deadline is None else min(1.0, self.deadline - time.monotonic())
            message = pubsub.get_message(timeout=max(0.0, wait))
            if message is None:
                continue
            if message["type"] in ("message", "pmessage", "smessage"):
                print(one_line(message["data"]), flush=True)
                self.received += 1
            elif message["type"] == "sunsubscribe":  # the slot moved: subscribe where it is now
                raise redis.ConnectionError("the node gave the channel's slot away")


def say(text: str) -> None:
    """A status line on stderr, apart from the events on stdout."""
    print(f"notifier: {text}", file=sys.stderr, flush=True)


class _Subscription:
    """One connection subscribed to a task's channel (or every task's), closed on exit."""

    def __init__(self, config: NotifierConfig, task_id: str | None) -> None:
        cfg = config.redis
        naming = naming_for(config)
        self.client = sync_client(
            cfg,
            key=None if task_id is None else naming.channel(task_id),
            # A silent link: the PING sent every HEALTH_CHECK_INTERVAL of quiet gets no answer,
            # and the read gives up after this long instead of waiting for good.
            socket_timeout=cfg.connect_timeout + cfg.publish_timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
        )  # it never reconnects on its own: the listener does, and says so
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
        try:
            self.target = _subscribe(self.pubsub, config, task_id)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.close()
            self.client.close()


def _backoff(config: NotifierConfig, attempt: int, deadline: float | None) -> None:
    """Wait before the next attempt: [reconnect] backoff with jitter, never past ``deadline``."""
    delay = config.reconnect.delay(attempt)
    if deadline is not None:
        delay = min(delay, max(0.0, deadline - time.monotonic()))
    time.sleep(delay)  # the backoff itself: nothing to wait for but time


def _subscribe(pubsub: Any, config: NotifierConfig, task_id: str | None) -> str:
    """Subscribe to one task's channel (None: every task's) and wait for Redis to confirm, so
    that nothing published after we return is missed. The channel or pattern."""
    if task_id is None:
        target = glob_escape(config.redis.channel_prefix) + "*"
        pubsub.psubscribe(target)
    else:
        naming = naming_for(config)
        target = naming.channel(check_task_id(task_id))
        (pubsub.ssubscribe if naming.sharded else pubsub.subscribe)(target)
    confirmation = pubsub.get_message(timeout=config.redis.connect_timeout)
    if confirmation is None or confirmation["type"] not in (
        "subscribe",
        "psubscribe",
        "ssubscribe",
    ):
        raise redis.ConnectionError("the subscription was not confirmed")  # retried like a loss
    return target


def one_line(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text.replace("\r", "\\r").replace("\n", "\\n")  # JSON never has raw newlines; others may


def glob_escape(text: str) -> str:
    """``text`` matched literally by a PSUBSCRIBE pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def redis_failure(config: NotifierConfig, exc: BaseException) -> str:
    error = describe(exc, url_secrets(config.redis.url))
    return f"redis at {config.redis.safe_url}: {error}"
