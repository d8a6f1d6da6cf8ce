"""The test Django project (tests/apps/django_site) as real processes: its ASGI application on
uvicorn, its Celery worker, and a WebSocket reader of its consumers; and Django set up in the
test's own process with the same settings."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from websockets.sync.client import ClientConnection, connect

from notifier.testing import free_port, wait_until
from tasks.launcher import CHECKOUT

from apps.celery_apps import ENV_BROKER
from support.helpers import answers_http

TESTS = Path(__file__).resolve().parents[1]
SETTINGS = "apps.django_site.settings"
USER, PASSWORD = "watcher", "watcher-pw-for-the-tests"


def site_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a process of the site: its settings on this Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(
        PYTHONPATH=os.pathsep.join([CHECKOUT, str(TESTS)]),
        DJANGO_SETTINGS_MODULE=SETTINGS,
        TEST_REDIS_URL=redis_url,
        **{ENV_BROKER: redis_url},  # the site's Celery app: its worker, and the start view
        **extra,
    )
    return env


def setup_here(redis_url: str) -> None:
    """Django set up in this process with the site's settings (once per process: the settings
    are read then, and this process's Redis is the session's)."""
    import django
    from django.conf import settings

    if not settings.configured:
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        os.environ["TEST_REDIS_URL"] = redis_url
    try:
        django.setup()  # reads the settings once, for good
    finally:
        # Not left for the processes later tests start: a Celery worker that finds
        # DJANGO_SETTINGS_MODULE sets Django up (celery.fixups.django), and cannot import these.
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        os.environ.pop("TEST_REDIS_URL", None)
    assert redis_url == settings.REDIS_URL, "Django was set up on another Redis in this process"


def run_in_site(env: Mapping[str, str], code: str, timeout: float = 60) -> str:
    """``code`` run with Django set up, in a process of its own; its output (stderr included)."""
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def make_database(env: Mapping[str, str]) -> None:
    """The site's tables (migrate), and the test user."""
    run_in_site(
        env,
        "from django.core.management import call_command\n"
        "from django.contrib.auth.models import User\n"
        "call_command('migrate', verbosity=0)\n"
        f"User.objects.create_user({USER!r}, password={PASSWORD!r})\n",
    )


class SiteServer:
    """The site's ASGI application (the gateway mounted in it) on uvicorn, on a free port."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "apps.django_site.asgi:application"]
                + ["--port", str(self.port), "--log-level", "warning", "--lifespan", "on"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._answers, 30)
        except TimeoutError:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        return answers_http(self.url("/login/"), self.process, self.log, "the site")

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Reader:
    """A WebSocket client of one of the site's consumers (``ws/<alias>/<group>``): the numbers
    the consumer relayed, read on a thread of its own."""

    def __init__(self, site: SiteServer, alias: str, group: str) -> None:
        self._stack = contextlib.ExitStack()
        url = site.url(f"/ws/{alias}/{group}", "ws")
        self.socket: ClientConnection = self._stack.enter_context(connect(url))
        # The consumer's first frame, sent once it has joined the group.
        self.channel: str = json.loads(self.socket.recv(timeout=10))["channel"]
        self.received: list[int] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for frame in self.socket:
            self.received.append(json.loads(frame)["n"])

    def wait_for(self, expected: set[int], timeout: float = 20) -> None:
        """Until every number of ``expected`` arrived; TimeoutError names the missing ones."""
        try:
            wait_until(lambda: expected <= set(self.received), timeout)
        except TimeoutError:
            missing = sorted(expected - set(self.received))
            raise TimeoutError(f"{len(missing)} never arrived, e.g. {missing[:10]}") from None

    def close(self) -> None:
        self._stack.close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
