"""FaultProxy against a real redis-server: each mode does what the tests rely on."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from notifier.testing import RedisServer

from support.faultproxy import FaultProxy


def _client(port: int, timeout: float = 2.0, held: bool = False) -> redis.Redis:
    """A client that shows the first failure: no retries; ``held`` keeps one connection, opened
    now, because the pool silently replaces a pooled connection that has a reset pending."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=held,
    )


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A private redis-server for this module, answering PING before the first test."""
    with RedisServer() as server:
        yield server.port


@pytest.fixture
def proxy(redis_port: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", redis_port) as p:
        yield p


def test_forward_relays_commands(proxy: FaultProxy) -> None:
    """In forward mode SET/GET through the proxy reach redis and the counters track it."""
    with _client(proxy.port) as r:
        assert r.set("fp:key", b"value")
        assert r.get("fp:key") == b"value"
        assert (proxy.accepted, proxy.active) == (1, 1)
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"


def test_forward_relays_large_values(proxy: FaultProxy) -> None:
    """A multi-megabyte value survives partial sends and back-pressure intact."""
    value = os.urandom(4 << 20)
    with _client(proxy.port, timeout=10) as r:
        assert r.set("fp:big", value)
        assert r.get("fp:big") == value


def test_reset_all_breaks_existing_connections(proxy: FaultProxy) -> None:
    """reset_all() resets open connections; the next command fails, a new connection works."""
    with _client(proxy.port, held=True) as r:
        assert r.ping()
        assert proxy.reset_all() == 1
        assert proxy.active == 0
        with pytest.raises(redis.ConnectionError):
            r.ping()
    with _client(proxy.port) as fresh:
        assert fresh.ping()
    assert proxy.accepted == 2


def test_refuse_fails_new_connections(proxy: FaultProxy) -> None:
    """refuse() resets existing and new connections; forward() lets new ones through again."""
    with _client(proxy.port, held=True) as old:
        assert old.ping()
        proxy.refuse()
        with pytest.raises(redis.ConnectionError):
            old.ping()
    with _client(proxy.port) as new:
        with pytest.raises(redis.ConnectionError):
            new.ping()
        proxy.forward()
        assert new.ping()


def test_blackhole_times_out_until_forward(proxy: FaultProxy) -> None:
    """blackhole() makes existing and new connections time out; forward() restores service."""
    with _client(proxy.port, timeout=0.3, held=True) as old:
        assert old.ping()
        proxy.blackhole()
        with pytest.raises(redis.TimeoutError):
            old.ping()
        with _client(proxy.port, timeout=0.3) as new, pytest.raises(redis.TimeoutError):
            new.ping()
        proxy.forward()
        with _client(proxy.port) as after:
            assert after.ping()


def test_forward_resets_blackholed_connections(proxy: FaultProxy) -> None:
    """A connection left over from blackhole mode is reset when forwarding resumes."""
    proxy.blackhole()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        proxy.forward()
        with pytest.raises(ConnectionResetError):
            s.recv(16)


def test_latency_delays_each_round_trip(proxy: FaultProxy) -> None:
    """latency(0.2) makes a PING take at least 0.2 s (once per round trip, not per byte) and
    keeps order."""
    with _client(proxy.port) as r:
        assert r.ping()  # connect (the pipeline reuses this pooled connection) before measuring
        proxy.latency(0.2)
        started = time.monotonic()
        assert r.ping()
        assert 0.2 <= time.monotonic() - started < 2.0
        pipe = r.pipeline(transaction=False)
        for i in range(50):
            pipe.set(f"fp:n{i}", i)
            pipe.get(f"fp:n{i}")
        assert pipe.execute()[1::2] == [str(i).encode() for i in range(50)]


def test_close_releases_every_fd(redis_port: int) -> None:
    """close() joins the thread and leaves no file descriptor open; it is idempotent."""
    before = len(os.listdir("/proc/self/fd"))
    proxy = FaultProxy("127.0.0.1", redis_port).start()
    with _client(proxy.port) as r:
        assert r.ping()
        proxy.blackhole()
        with _client(proxy.port, timeout=0.3) as hung, pytest.raises(redis.TimeoutError):
            hung.ping()
        proxy.close()
    proxy.close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert f"FaultProxy-{proxy.port}" not in {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError):
        proxy.forward()
