"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa

from notifier import Notifier, NotifierConfig
from notifier.config import QueueConfig, ReconnectConfig, RedisConfig
from notifier.outbox import SLEEPING
from notifier.testing import wait_until


def new_task(prefix: str) -> str:
    """A task id of its own for one test: ``prefix`` and random hex."""
    return f"{prefix}-{secrets.token_hex(4)}"


# The environment for a `notifier` command: the test's own NOTIFIER_* settings left out, so that
# the command reads only the config file it is given.
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if k not in ("NOTIFIER_CONFIG", "NOTIFIER_REDIS_URL")
}


def listener(
    config_file: Path | str,
    *args: str,
    cwd: Path | None = None,
    stderr: IO[str] | int = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """`notifier --config FILE listen ARGS...` as a process of its own; stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "notifier.cli", "--config", str(config_file), "listen", *args],
        cwd=cwd,
        env=CLEAN_ENV,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def make_config(url: str, **tables: dict[str, Any]) -> NotifierConfig:
    """A config for ``url`` with quick reconnects, plus per-table overrides. Progress is not
    coalesced unless a test asks (``queue={"progress_interval": ...}``): most tests count every
    progress event they publish. tests/core/test_coalesce.py and the Celery tests run with it on."""
    config = NotifierConfig(
        redis=RedisConfig(url=url, connect_timeout=1.0, publish_timeout=1.0),
        queue=QueueConfig(progress_interval=0.0),
        reconnect=ReconnectConfig(initial_backoff=0.01, max_backoff=0.2),
    )
    for name, values in tables.items():
        config = replace(config, **{name: replace(getattr(config, name), **values)})
    return config


def wait_until_asleep(notifier: Notifier) -> None:
    """Until the notifier thread sleeps on its doorbell for want of events, so that the next put
    rings it. White-box: the outbox says how its thread waits (notifier.outbox)."""
    wait_until(lambda: notifier._outbox is not None and notifier._outbox._waiting == SLEEPING, 30)


def lingering(notifier: Notifier) -> None:
    """Publish one event to a sleeping notifier thread and wait until it is in Redis: the thread
    then dozes for the rest of its queue.linger, and what is published next waits for it."""
    wait_until_asleep(notifier)
    assert notifier.publish_progress("first", 0)
    assert notifier.flush(20)


def assert_invariant(stats: dict[str, Any]) -> None:
    """accepted == published + pending + coalesced + drops after acceptance; refused calls are
    drops too."""
    after_acceptance = stats["dropped"] - stats["rejected"]
    settled = stats["published"] + stats["pending"] + stats["coalesced"] + after_acceptance
    assert stats["accepted"] == settled, stats
    assert sum(stats["dropped_by_reason"].values()) == stats["dropped"], stats


POSTGRES_URL = os.environ.get(
    "NOTIFIER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose connections live in a fresh schema of their own, dropped afterwards.

    Skips the test, naming the URL, when no PostgreSQL server answers there (fails instead when
    $NOTIFIER_REQUIRE_POSTGRES is set, as in CI).
    """
    base = sa.make_url(POSTGRES_URL)
    admin = sa.create_engine(base, connect_args={"connect_timeout": 5})
    schema = f"notifier_test_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {base.render_as_string()}: {exc.orig}"
        if os.environ.get("NOTIFIER_REQUIRE_POSTGRES"):  # set by .ci/run: CI must not skip these
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def answers_http(url: str, process: subprocess.Popen[Any] | None, log: Path, what: str) -> bool:
    """Whether the server at ``url`` answers HTTP at all (an error status is an answer: it is
    up); RuntimeError with its log when its process has exited instead."""
    if process is not None and process.poll() is not None:
        raise RuntimeError(f"{what} exited: {log.read_text()}")
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True  # it answers (401, 404 ...)
    except OSError:
        return False
    return True
