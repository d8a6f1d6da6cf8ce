"""Start and stop a real ``celery worker`` for the demo and the tests, and talk to it.

The worker is a child process running ``celery -A tasks.celery_app worker``; its configuration comes
from the environment (``NOTIFIER_CONFIG``, ``NOTIFIER_REDIS_URL``) exactly as in production. It
imports ``tasks`` from this checkout (the package is not installed), found through ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from celery import Celery

from tasks.reports import ENV_REPORT_FILE, read_reports

READY_MARK = " ready."
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WorkerProcess:
    """One ``celery worker`` child process; its output is collected line by line.

    ``app`` is the module of the Celery app (``-A``): the reference application by default.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        app: str = "tasks.celery_app",
        pool: str = "prefork",
        concurrency: int = 2,
        max_tasks_per_child: int | None = None,
        extra: Sequence[str] = (),
        report_file: str | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = f"worker-{uuid.uuid4().hex[:8]}"
        # `python -m celery` puts its working directory first on sys.path, before PYTHONPATH: a
        # worker that must import a package from elsewhere runs in a directory of its own.
        self.cwd = cwd
        self.queue = (
            self.name
        )  # its own queue: other workers on the same broker never take its tasks
        self.args = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "--pool", pool, "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"{self.name}@%h", "--queues", self.queue,
        ]  # fmt: skip
        if max_tasks_per_child:
            self.args += ["--max-tasks-per-child", str(max_tasks_per_child)]
        self.args += list(extra)
        path = [CHECKOUT, *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), **env}
        # Where each of its processes appends its final notifier counters (tasks/reports.py).
        self.report_file = report_file
        if report_file is not None:
            self.env[ENV_REPORT_FILE] = report_file
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> Self:
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal goes to us, not straight to it
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        if not self.wait_for_line(READY_MARK, timeout):
            self.stop()
            raise RuntimeError("the celery worker did not become ready:\n" + self.output[-4000:])
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        if process.stdout is None:  # never: we asked for a pipe
            return
        with process.stdout:  # read to the end of the output, then close our side
            for line in process.stdout:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, fragment: str, timeout: float) -> bool:
        """Wait until a line containing ``fragment`` was printed (False if the worker died)."""

        def seen() -> bool:
            exited = self.process is None or self.process.poll() is not None
            return exited or any(fragment in line for line in self.lines)

        with self._changed:
            self._changed.wait_for(seen, timeout)
            return any(fragment in line for line in self.lines)

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def log_events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The structlog JSON lines the worker printed (optionally only events called ``name``)."""
        events = []
        with self._changed:
            lines = list(self.lines)
        for line in lines:
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if name is None or event.get("event") == name:
                    events.append(event)
        return events

    def reports(self) -> list[dict[str, Any]]:
        """The final notifier counters of each worker process that closed its notifier."""
        return [] if self.report_file is None else read_reports(self.report_file)

    def stop(self, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM): running tasks finish, children drain and exit.

        Returns once the worker has exited *and* every line it printed has been read, so
        ``log_events`` afterwards sees what its children logged on the way out.
        """
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout)  # the pipe ends when the worker and its children are gone
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def client(broker_url: str, result_backend: str | None = None) -> Celery:
    """A Celery client for sending the tasks by name, without importing the worker's app."""
    return Celery("tasks-client", broker=broker_url, backend=result_backend or broker_url)
