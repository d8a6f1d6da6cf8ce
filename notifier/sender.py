"""The notifier thread: its own event loop, its own queue, its own Redis connection.

Everything in this module runs on the notifier thread, except the three hand-over points the
publisher uses from other threads: ``ready`` (a threading.Event), ``request_stop()`` and
``force_stop()``. The loop, the janus queue's async side and the Redis client are created here and
never touched from anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Sequence

import janus
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig
from structlog.typing import FilteringBoundLogger

from notifier.config import NotifierConfig, url_password
from notifier.ledger import CRASHED, SHUTDOWN, Ledger
from notifier.logs import scrub

# One queued event: the task id (it names the channel) and the encoded message.
Item = tuple[str, bytes]

DISCONNECT_TIMEOUT = 0.5  # closing a socket never needs a reply; don't wait long for one


class Sender:
    """Takes batches off the queue and publishes them, reconnecting until they are delivered."""

    def __init__(self, config: NotifierConfig, ledger: Ledger, log: FilteringBoundLogger) -> None:
        self.config = config
        self.ledger = ledger
        self.log = log
        self.ready = threading.Event()
        self.queue: janus.Queue[Item] | None = None
        self._secret = url_password(config.redis.url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._client: Redis | None = None
        self._outage_since: float | None = None
        self._failed_connects = 0
        self._was_connected = False

    # Thread entry point and the hand-over points used from other threads ----------------------

    def run(self) -> None:
        """The notifier thread's body."""
        asyncio.run(self._run())

    def request_stop(self) -> None:
        """Refuse new events, deliver what is queued, then end the thread. Any thread."""
        if self.queue is not None:
            self.queue.shutdown()  # thread-safe; wakes the sender once the queue is empty

    def force_stop(self) -> None:
        """Give up delivering: what is left is counted as dropped (``shutdown``). Any thread."""
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            # RuntimeError: the loop already closed, the thread is on its way out.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)

    # Notifier thread only -------------------------------------------------------------------

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self.queue = janus.Queue(self.config.queue.maxsize)
        self.ready.set()
        reason = SHUTDOWN
        try:
            await self._pump(self.queue.async_q)
        except asyncio.CancelledError:
            pass  # force_stop(): the deadline passed
        except Exception:
            reason = CRASHED
            self.log.exception("notifier_thread_crashed")
        finally:
            self._drop_remaining(self.queue, reason)
            await self._disconnect()
            await self.queue.wait_closed()

    async def _pump(self, queue: janus.AsyncQueue[Item]) -> None:
        batch_size = self.config.queue.batch_size
        while True:
            try:
                batch = [await queue.get()]
            except janus.AsyncQueueShutDown:
                return  # closed and drained
            while len(batch) < batch_size:
                try:
                    batch.append(queue.get_nowait())
                except (janus.AsyncQueueEmpty, janus.AsyncQueueShutDown):
                    break
            await self._deliver(queue, batch)

    async def _deliver(self, queue: janus.AsyncQueue[Item], batch: Sequence[Item]) -> None:
        """Publish the batch, reconnecting as often as it takes (at least once delivery)."""
        attempt = 0
        while True:
            client = self._client or await self._connect()
            if client is not None:
                try:
                    async with asyncio.timeout(self.config.redis.publish_timeout):
                        replies = await self._send(client, batch)
                except TimeoutError:
                    # The connection may have a reply in flight; reading it later would hand it to
                    # the wrong command (CVE-2023-28859). Throw the connection away.
                    self.log.warning(
                        "notification_publish_timeout",
                        events=len(batch),
                        timeout=self.config.redis.publish_timeout,
                    )
                    await self._lost_connection("publish timed out")
                except (RedisError, OSError) as exc:
                    self.log.warning(
                        "notification_publish_failed", events=len(batch), error=self._describe(exc)
                    )
                    await self._lost_connection(self._describe(exc))
                else:
                    self._settle(queue, batch, replies)
                    return
                with self.ledger.lock:
                    self.ledger.resent += len(batch)
            await self._backoff(attempt)
            attempt += 1

    async def _send(self, client: Redis, batch: Sequence[Item]) -> list[object]:
        prefix = self.config.redis.channel_prefix
        pipe = client.pipeline(transaction=False)
        for task_id, payload in batch:
            pipe.publish(prefix + task_id, payload)
        return await pipe.execute(raise_on_error=False)

    def _settle(
        self, queue: janus.AsyncQueue[Item], batch: Sequence[Item], replies: Sequence[object]
    ) -> None:
        failed = [r for r in replies if isinstance(r, ResponseError)]
        if failed:
            self.log.error(
                "notification_publish_failed", events=len(failed), error=self._describe(failed[0])
            )
        with self.ledger.lock:
            self.ledger.settle(published=len(batch) - len(failed), failed=len(failed))
            for _ in batch:
                queue.task_done()

    async def _connect(self) -> Redis | None:
        cfg = self.config.redis
        client = Redis.from_url(
            cfg.url,
            socket_connect_timeout=cfg.connect_timeout,
            socket_timeout=None,  # bounded by our own timeouts: connect_timeout, publish_timeout
            retry=Retry(NoBackoff(), 0),  # we retry ourselves, with our own backoff and accounting
            # Each of these costs a round trip on every (re)connect and gives us nothing.
            driver_info=None,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                await client.ping()
        except TimeoutError:
            await self._close(client)
            self._connect_failed(f"connect timed out after {cfg.connect_timeout}s")
            return None
        except (RedisError, OSError) as exc:
            await self._close(client)
            self._connect_failed(self._describe(exc))
            return None
        self._client = client
        ledger = self.ledger
        if self._was_connected:
            ledger.reconnects += 1
        self._was_connected = True
        ledger.connected = True
        self.log.info(
            "notifier_connected",
            reconnects=ledger.reconnects,
            outage_seconds=None
            if self._outage_since is None
            else round(time.monotonic() - self._outage_since, 3),
        )
        self._outage_since = None
        self._failed_connects = 0
        return client

    def _connect_failed(self, error: str) -> None:
        self.ledger.last_error = error
        self._failed_connects += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        # The first failure of an outage is a warning; repeating it every backoff would flood.
        emit = self.log.warning if self._failed_connects == 1 else self.log.debug
        emit("notifier_connect_failed", error=error, attempts=self._failed_connects)

    async def _lost_connection(self, error: str) -> None:
        self.ledger.connected = False
        self.ledger.last_error = error
        self._outage_since = time.monotonic()
        self.log.warning("notifier_disconnected", error=error)
        await self._disconnect()

    async def _backoff(self, attempt: int) -> None:
        cfg = self.config.reconnect
        delay = min(cfg.max_backoff, cfg.initial_backoff * 2 ** min(attempt, 32))
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        self.ledger.connected = False
        if client is not None:
            await self._close(client)

    @staticmethod
    async def _close(client: Redis) -> None:
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT):
                await client.aclose(close_connection_pool=True)
        except (RedisError, OSError, TimeoutError):
            pass  # the socket is being abandoned either way

    def _drop_remaining(self, queue: janus.Queue[Item], reason: str) -> None:
        """Count what was never delivered, then close the queue. Runs once, at the end."""
        queue.shutdown()
        with self.ledger.lock:
            remaining = queue.async_q.unfinished_tasks
            while True:
                try:
                    queue.async_q.get_nowait()
                except (janus.AsyncQueueEmpty, janus.AsyncQueueShutDown):
                    break
            for _ in range(remaining):
                queue.async_q.task_done()
            report = self.ledger.lose(reason, remaining) if remaining else None
        if remaining:
            self.log.warning(
                "notification_dropped", reason=reason, count=remaining, dropped_by_reason=report
            )
        queue.close()

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return scrub(text, self._secret)
