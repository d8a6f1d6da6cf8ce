"""Log lines reach their stream whole, and land at their own level in a user's Celery worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from notifier.testing import RedisServer
from tasks.launcher import WorkerProcess, client
from tasks.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


class RecordingStream:
    """A text stream that keeps each write() call apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.mark.usefixtures("_restore_structlog")
def test_each_worker_log_line_is_one_write_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """tasks/ logging hands each line, newline included, to its stream in a single write()."""
    stream = RecordingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info")
    log = structlog.get_logger("tasks")
    log.info("first", n=1)
    try:
        raise ValueError("with a traceback")
    except ValueError:
        log.exception("second")
    assert 2 == len(stream.writes), stream.writes
    for text in stream.writes:
        assert text.endswith("\n") and 1 == text.count("\n"), text
        json.loads(text)


WRITER = """
    import os, sys
    import structlog
    from tasks.logs import configure_logging
    configure_logging("info")
    log = structlog.get_logger("tasks")
    for i in range(int(sys.argv[1])):
        log.info("line", i=i, pad="x" * (50 + (i * 37) % 3000))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("unbuffered", [True, False], ids=["PYTHONUNBUFFERED=1", "buffered"])
def test_processes_sharing_a_pipe_never_run_their_lines_together(unbuffered: bool) -> None:
    """Four processes log 1,500 lines each (up to 3 KB) into one pipe at once, as prefork
    children share a worker's stderr: every line arrives whole and parses."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    lines, writers = 1500, 4
    read_end, write_end = os.pipe()
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(WRITER), str(lines)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=write_end,
                env=env,
            )
            for _ in range(writers)
        ]
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()  # until every writer has exited
    assert [0] * writers == [p.wait(30) for p in processes]
    received = output.split(b"\n")
    assert b"" == received.pop()
    unparsable = []
    for line in received:
        try:
            json.loads(line)
        except ValueError:
            unparsable.append(line[:120])
    assert [] == unparsable
    assert lines * writers == len(received)


def logging_page_recipe() -> str:
    """The structlog recipe of the logging page's "In your own Celery app", as written there."""
    text = (ROOT / "docs" / "logging.md").read_text()
    section = text[text.index("## In your own Celery app") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


USER_APP = """
from celery import Celery

import notifier
import notifier.celery

app = Celery("userapp", broker={broker!r}, backend={broker!r})
notifier.celery.install(app, None)


@app.task(name="userapp.work")
def work(task_id: str) -> str:
    notifier.publish_progress(task_id, 50.0)
    return "done"
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("recipe", [True, False], ids=["logging-page-recipe", "structlog-defaults"])
def test_notifier_lines_show_at_their_own_level_in_a_users_prefork_worker(
    tmp_path: Path, recipe: bool
) -> None:
    """With the logging page's recipe, a user's prefork worker prints the notifier's info lines as
    INFO/ForkPoolWorker; with structlog's defaults, Celery shows them as WARNING."""
    module = tmp_path / "userapp.py"
    setup = logging_page_recipe() if recipe else ""
    with RedisServer() as redis:
        module.write_text(setup + USER_APP.format(broker=redis.url))
        env = {
            "PYTHONPATH": str(tmp_path),
            "NOTIFIER_CONFIG": "",
            "NOTIFIER_REDIS_URL": redis.url,
        }
        with WorkerProcess(env, app="userapp", concurrency=1) as worker:
            app = client(redis.url)
            try:
                task = app.send_task("userapp.work", args=["t-1"], queue=worker.queue)
                assert "done" == task.get(timeout=30)
            finally:
                app.close()
            assert worker.wait_for_line("notifier_connected", 30)
        lines = [line for line in worker.lines if "notifier_connected" in line]
    level = "INFO" if recipe else "WARNING"
    assert lines and all(re.search(rf"{level}/ForkPoolWorker-\d+\]", line) for line in lines), lines
