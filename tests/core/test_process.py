"""Whole-process behaviour: interpreter exit, structlog left alone, the original loop failure."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio

import notifier
from notifier.testing import EventCollector, RedisServer

ROOT = Path(__file__).resolve().parents[2]

# What a clean exit must never print.
NOISE = (
    "Traceback",
    "Task was destroyed",
    "Event loop is closed",
    "Exception ignored",
    "ResourceWarning",
    "nclosed",
    "never awaited",
)


def run_script(code: str, *env_pairs: tuple[str, str], timeout: float = 30) -> str:
    """Run ``code`` in a fresh interpreter with warnings as errors; return all it printed.

    structlog's default (unconfigured) output goes to stdout, so both streams are returned.
    """
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONASYNCIODEBUG": "0", **dict(env_pairs)},
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_interpreter_exit_drains_the_default_notifier(
    redis_server: RedisServer, collector: EventCollector
) -> None:
    """A script that publishes and simply ends still delivers every event, with a clean stderr."""
    output = run_script(
        """
        import notifier
        for i in range(3000):
            assert notifier.publish("exit-drain", "tick", {"seq": i})
        notifier.publish_completed("exit-drain", result="bye")
        """,
        ("NOTIFIER_REDIS_URL", redis_server.url),
    )
    events = collector.wait_for(3001)
    assert list(range(3000)) == [e["data"]["seq"] for e in events[:-1]]
    assert "completed" == events[-1]["type"]
    assert not [line for line in output.splitlines() if any(n in line for n in NOISE)], output


def test_interpreter_exit_with_redis_unreachable_is_bounded() -> None:
    """With Redis down, exit waits drain_timeout at most, then reports the shutdown drops."""
    started = time.monotonic()
    output = run_script(
        """
        import notifier
        from notifier import NotifierConfig
        from notifier.config import RedisConfig, ShutdownConfig
        notifier.configure(NotifierConfig(
            redis=RedisConfig(url="redis://127.0.0.1:1/0"),
            shutdown=ShutdownConfig(drain_timeout=0.5),
        ))
        for i in range(10):
            notifier.publish("nowhere", "tick", {"seq": i})
        """,
        timeout=10,
    )
    # Interpreter start-up plus a 0.5 s drain, well under the 5 s a hang-free exit allows.
    assert time.monotonic() - started < 5
    assert "notification_dropped" in output and "count=10" in output and "shutdown" in output
    assert not [line for line in output.splitlines() if any(n in line for n in NOISE)], output


def test_library_never_configures_structlog(redis_server: RedisServer) -> None:
    """Importing and using the notifier leaves structlog unconfigured: that is the app's job."""
    run_script(
        """
        import structlog, notifier
        notifier.publish_progress("t", 1)
        assert notifier.flush(5)
        assert not structlog.is_configured()
        """,
        ("NOTIFIER_REDIS_URL", redis_server.url),
    )


def test_a_fork_while_the_notifier_writes_a_log_line_leaves_the_child_able_to_log() -> None:
    """structlog's PrintLogger holds a per-file lock while it writes and a forked child inherits it
    as it was. The notifier's lines never overlap a fork, so a child's first line never hangs."""
    output = run_script(
        """
        import os, select, sys, threading, warnings
        import structlog
        from notifier.logs import get_logger

        entered, release = threading.Event(), threading.Event()

        class SlowFile:  # a line that takes long to write: a fork will land in the middle of it
            def write(self, text):
                if "mid-write" in text:
                    entered.set()
                    release.wait(10)
                sys.stdout.write(text)
            def flush(self):
                sys.stdout.flush()

        structlog.configure(
            processors=[structlog.processors.JSONRenderer()],
            logger_factory=structlog.PrintLoggerFactory(SlowFile()),
        )
        log = get_logger("info")
        writer = threading.Thread(target=log.info, args=("mid-write",))
        writer.start()
        assert entered.wait(10)
        # Registered last, so it runs first of the before-fork hooks: the line goes on, and the
        # notifier's own hook then waits for it to end.
        os.register_at_fork(before=release.set)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: on purpose
            pid = os.fork()
        if pid == 0:
            log.info("child-logged")
            os._exit(0)
        exited = os.pidfd_open(pid)
        if not select.select([exited], [], [], 10)[0]:
            os.kill(pid, 9)
            sys.exit("the child hung on its first log line")
        os.close(exited)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        writer.join()
        """,
    )
    assert '"event": "child-logged"' in output, output


def test_a_fork_while_a_start_hook_is_registered_leaves_the_child_able_to_start() -> None:
    """The start hooks' lock, held by another thread at the fork, is a fresh one in the child:
    a notifier started there does not hang."""
    output = run_script(
        """
        import os, select, sys, threading, warnings
        from notifier import seams

        held, release = threading.Event(), threading.Event()

        def hold():
            with seams._lock:  # what a thread registering a hook does
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: on purpose
            pid = os.fork()
        if pid == 0:
            seams.on_start(lambda notifier: None)
            os._exit(0)
        release.set()
        exited = os.pidfd_open(pid)
        if not select.select([exited], [], [], 10)[0]:
            os.kill(pid, 9)
            sys.exit("the child hung on the start hooks' lock")
        os.close(exited)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        holder.join()
        print("child-started")
        """,
    )
    assert "child-started" in output, output


def test_old_pattern_fails_across_loops_and_notifier_path_does_not(
    redis_server: RedisServer,
    collector_factory: Callable[..., EventCollector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shared async client used from another loop fails; publish_failed does not."""
    shared = redis.asyncio.Redis.from_url(redis_server.url)
    setup_loop = asyncio.new_event_loop()
    setup_loop.run_until_complete(shared.ping())  # the client's connection now belongs to this loop
    outcome: list[BaseException | bool] = []

    def old_mark_task_failed() -> None:
        # A worker's own per-process loop, as in `run_async(mark_task_failed(...))`.
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.wait_for(shared.publish("task:old", b"{}"), timeout=5))
            outcome.append(True)
        except Exception as exc:  # what a try/except around such a call swallows
            outcome.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=old_mark_task_failed)
    thread.start()
    thread.join()
    setup_loop.run_until_complete(shared.aclose())
    setup_loop.close()
    (result,) = outcome
    assert isinstance(result, RuntimeError), result
    assert "attached to a different loop" in str(result)

    collector = collector_factory(redis_server.url, "task:task-new")
    monkeypatch.setenv("NOTIFIER_REDIS_URL", redis_server.url)
    notifier.configure(None)
    worker_loop = asyncio.new_event_loop()
    try:

        async def mark_task_failed(error: BaseException) -> bool:
            return notifier.publish_failed("task-new", error)

        try:
            raise RuntimeError("step failed")
        except RuntimeError as exc:
            assert worker_loop.run_until_complete(mark_task_failed(exc)) is True
        (event,) = collector.wait_for(1)
        assert "RuntimeError: step failed" == event["data"]["error"]
    finally:
        worker_loop.close()
        notifier.shutdown()


def test_quickstart_example_runs_as_written(
    redis_server: RedisServer, collector: EventCollector
) -> None:
    """The first Python block of the quickstart page runs unchanged and delivers its four
    events."""
    page = (ROOT / "docs" / "quickstart.md").read_text()
    example = page.split("```python\n", 1)[1].split("```", 1)[0]
    output = run_script(
        f"import os; os.chdir({str(ROOT)!r})\n{example}", ("NOTIFIER_REDIS_URL", redis_server.url)
    )
    events = collector.wait_for(4)
    assert ["progress", "failed", "completed", "custom_type"] == [e["type"] for e in events]
    assert "'published': 4" in output
