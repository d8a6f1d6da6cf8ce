"""Shared fixtures: real redis-server processes, real subscribers, notifiers that get closed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from notifier import Notifier
from notifier.testing import ENV_PORTS, EventCollector, RedisServer

from support.faultproxy import FaultProxy
from support.helpers import make_config

# The page tests' Chromium: browser and page (tests/support/browser.py).
pytest_plugins = ["support.browser"]

# Port ranges for parallel runs (make test runs pytest-xdist workers): worker i of n draws its
# ports from a share of its own in 10000-19999, below the kernel's ephemeral range, so
# a cluster node's bus port (port + 10000) falls in 20000-29999, nobody's range.
PORTS_LOW, PORTS_SPAN = 10000, 10000


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None or ENV_PORTS in os.environ:
        return
    index, count = int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    width = PORTS_SPAN // count
    low = PORTS_LOW + index * width
    os.environ[ENV_PORTS] = f"{low}-{low + width - 1}"


# The files that take longest, measured (pytest --durations=0), longest first. make test hands
# whole files to its workers in collection order, so these go out first and the workers finish
# together instead of one waiting on the other's last long file. Order within a file is kept.
LONGEST_FIRST = (
    "test_faults.py",
    "test_forks.py",
    "test_sentinel.py",
    "test_cluster.py",
    "test_gateway.py",
    "test_celery.py",
    "test_gevent.py",
    "test_celery_lifecycle.py",
    "test_health.py",
    "test_properties.py",
    "test_browser.py",
    "test_web_examples.py",
    "test_store.py",
    "test_gateway_door.py",
    "test_gateway_redis.py",
    "test_wheel.py",
    "test_docs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests that kill or restart Redis use redis_factory."""
    with RedisServer(extra=["--enable-debug-command", "yes"]) as server:
        yield server


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start throwaway redis-servers that the test may kill and restart; all stopped after."""
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def collector_factory() -> Iterator[Callable[..., EventCollector]]:
    """Subscribers confirmed before they return; all closed after the test."""
    collectors: list[EventCollector] = []

    def make(url: str, pattern: str = "task:*") -> EventCollector:
        collector = EventCollector(url, pattern).start()
        collectors.append(collector)
        return collector

    yield make
    for collector in collectors:
        collector.close()


@pytest.fixture
def collector(
    redis_server: RedisServer, collector_factory: Callable[..., EventCollector]
) -> EventCollector:
    return collector_factory(redis_server.url)


@pytest.fixture
def notifier_factory() -> Iterator[Callable[..., Notifier]]:
    """Notifiers for a URL with table overrides (``queue={"maxsize": 10}``); closed after."""
    made: list[Notifier] = []

    def make(url: str, **tables: dict[str, Any]) -> Notifier:
        notifier = Notifier(make_config(url, **tables))
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close(timeout=0.5)


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[RedisServer], FaultProxy]]:
    """Fault-injecting TCP proxies in front of a server; all closed after the test."""
    proxies: list[FaultProxy] = []

    def make(server: RedisServer) -> FaultProxy:
        proxy = FaultProxy("127.0.0.1", server.port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


# Every password the suite gives a Redis server or puts in a URL. None may appear in anything a
# test printed or logged (stdout, stderr, log records), across the whole suite: the library
# redacts them everywhere. Checked per test report; a leak fails the session.
TEST_PASSWORDS = (
    "s3cr3t-Pa55word",
    "wr0ng-Pa55word",
    "hunter2-secret-pw",
    "Sup3r-s3cret-pw",
    "pw-Zq8",
    "limited-pw",
    "test-gateway-secret-0123456789abcdef",  # tests/support/gateway.py's gateway secret
)
_leaks: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for section, content in report.sections:
        for secret in TEST_PASSWORDS:
            if secret in content:
                _leaks.append(f"{report.nodeid} ({section}): {secret!r}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _leaks:
        terminalreporter.section("passwords in captured output", red=True)
        for leak in dict.fromkeys(_leaks):
            terminalreporter.line(leak)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
