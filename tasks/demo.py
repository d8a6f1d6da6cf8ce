"""`make demo`: real workflows on a real Celery worker, their notifications shown as they arrive.

Starts a throwaway redis-server (unless $NOTIFIER_REDIS_URL is set), a prefork worker with two
children, and a subscriber; submits workflows that complete, wait for review and are approved or
rejected, resume from a checkpoint, fail, or have their worker child killed in mid-run; then
prints each task's final database status next to the last notification received, and the
notifier counters the worker's processes reported when they exited (through tasks/reports.py:
whole lines in a file, never the shared log stream). Every Celery task run also shows its own
lifecycle events (started, completed, failed) on its Celery task id. An import job, a chord of
eight files of which one fails, shows its workflow channel: how many files are done, failed and
running, the job's progress, and its one terminal event, ``failed``, at the first failure.
Exits 0 only when every check passes; each failed check is named with what it found.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.testing import EventCollector, RedisServer, wait_until
from tasks.launcher import WorkerProcess, client
from tasks.settings import ENV_DATABASE_URL, AppSettings, load_settings
from tasks.store import TaskStore

COLOURS = {
    "progress": "36",
    "completed": "32",
    "failed": "31",
    "waiting_review": "33",
    "started": "2",
    "revoked": "35",
    "member": "34",
}
IMPORT_FILES = [f"orders-{month:02d}.csv" for month in range(1, 9)]
FAILING_FILE = IMPORT_FILES[4]
CHILDREN = 2  # prefork children; each reports its notifier counters when it exits
PROCESSES = CHILDREN + 1  # and the main process, which ends the runs of children it lost


@dataclass
class Scenario:
    task_id: str
    steps: list[str]
    expected: str  # final status in the database, and type of the last notification
    review_after: int | None = None
    review: dict[str, Any] | None = None
    resume_from: str | None = None  # simulate a crash after step 1, then resume from this


def scenarios(run: str) -> list[Scenario]:
    work = ["noop", "sleep:0.2", "cpu:0.1", "noop"]
    return [
        Scenario(f"{run}-report-1", work, "completed"),
        Scenario(f"{run}-report-2", work, "completed"),
        Scenario(f"{run}-report-3", ["noop", "sleep:0.1"], "completed"),
        Scenario(f"{run}-approve-1", work, "completed", 2, {"approved": True}),
        Scenario(f"{run}-approve-2", ["noop", "noop"], "completed", 1, {"approved": True}),
        Scenario(
            f"{run}-reject-1", work, "failed", 2, {"approved": False, "reason": "missing SLA"}
        ),
        Scenario(
            f"{run}-reject-2", work, "failed", 1, {"approved": False, "reason": "budget exceeded"}
        ),
        Scenario(f"{run}-resume-ok", work, "completed", resume_from="step-1"),
        Scenario(f"{run}-resume-missing", work, "failed", resume_from="step-9"),
        Scenario(f"{run}-bad-step", ["noop", "teleport"], "failed"),
        Scenario(f"{run}-killed", ["noop", "crash"], "failed"),  # SIGKILL in mid-run
    ]


class Screen:
    """One line per notification, coloured on a terminal."""

    def __init__(self) -> None:
        self.colour = sys.stdout.isatty()
        self.lock = threading.Lock()

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def event(self, e: dict[str, Any]) -> None:
        channel = e.get("task_id") or f"workflow:{e.get('workflow_id', '')[:27]}"
        line = f"{e['timestamp'][11:23]}  {channel:<36} {e['type']:<15} {describe(e)}"
        with self.lock:
            print(self.paint(line, COLOURS.get(e["type"], "0")), flush=True)


def describe(event: dict[str, Any]) -> str:
    data, kind = event["data"], event["type"]
    if "workflow_id" in event:
        counts = (
            f"{data['completed']}/{data['total']} done, {data['failed']} failed, "
            f"{data['running']} running, {data['progress']:5.1f}%"
        )
        if kind == "member":
            return f"{counts}  <- {data['event']['type']} of {data['member'][:8]}"
        return f"{counts}  {data.get('error', '')}"
    if kind == "progress":
        return f"{data['progress']:5.1f}%  {data.get('message') or ''}"
    if kind == "completed":
        return f"result={data.get('result')}"
    if kind == "failed":
        return str(data.get("error", ""))
    if kind == "waiting_review":
        return f"after step {data.get('after_step')}"
    if kind == "started":
        return f"{data.get('task')} (Celery task)"
    return str(data)


def main() -> int:
    screen = Screen()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="notifier-demo-")))
        settings = environment(stack, tmp)
        store = TaskStore(settings.database_url)
        stack.callback(store.close)
        collector = stack.enter_context(
            EventCollector(settings.notifier.redis.url, on_event=screen.event)
        )
        worker = stack.enter_context(
            WorkerProcess(
                {}, pool="prefork", concurrency=CHILDREN, report_file=str(tmp / "reports.jsonl")
            )
        )
        print(f"celery worker {worker.name}: prefork, {CHILDREN} children\n")
        app = client(settings.broker_url, settings.result_backend)
        stack.callback(app.close)

        def run(name: str, *args: Any) -> dict[str, Any]:
            task = app.send_task(f"tasks.{name}", args=list(args), queue=worker.queue)
            try:
                result: dict[str, Any] = task.get(timeout=60)
            except Exception as exc:  # WorkerLostError: the run's child was killed
                return {"success": False, "status": "lost", "error": f"{type(exc).__name__}"}
            return result

        plan = scenarios(f"demo-{uuid.uuid4().hex[:4]}")
        threads = [threading.Thread(target=drive, args=(s, store, run)) for s in plan]
        for thread in threads:
            thread.start()
        job = start_import_job(worker.queue)
        stack.callback(job.release)  # its results, before the Redis they read from stops
        for thread in threads:
            thread.join()

        def last(task_id: str) -> dict[str, Any] | None:
            mine = [e for e in collector.events if e.get("task_id") == task_id]
            return mine[-1] if mine else None

        # On a timeout the table below shows which rows miss their last notification.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: all(_type(last(s.task_id)) == s.expected for s in plan), 15)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: job.settled() and any(map(_ends, job.events(collector))), 30)
        exit_code = worker.stop()
        reports = worker.reports()
        checks = summary(screen, plan, store, last, reports, collector.events)
        for check in job.checks(job.events(collector)):
            show(screen, check)
            checks.append(check)
        failed = [check for check in checks if not check.ok]
        if len(reports) != PROCESSES:  # show why a process did not report
            print(f"\nthe worker exited with {exit_code}; its last lines:\n{worker.output[-3000:]}")
        if failed:
            print(screen.paint(f"demo FAILED: {len(failed)} of {len(checks)} checks", "31"))
            return 1
        print(screen.paint(f"demo OK: {len(checks)} of {len(checks)} checks passed", "32"))
        return 0
    return 1


def environment(stack: ExitStack, tmp: Path) -> AppSettings:
    """A Redis and a database of the demo's own, unless the environment names them."""
    if not os.environ.get("NOTIFIER_REDIS_URL"):
        redis = stack.enter_context(RedisServer())
        os.environ["NOTIFIER_REDIS_URL"] = redis.url
        print(f"embedded redis-server {redis.binary} on port {redis.port}")
    if not load_settings().database_configured:  # a store of its own, gone afterwards
        os.environ[ENV_DATABASE_URL] = f"sqlite:///{tmp / 'tasks.db'}"
    settings = load_settings()
    print(f"database {settings.database_url}")
    return settings


def drive(s: Scenario, store: TaskStore, run: Any) -> None:
    """Take one workflow through its scenario, as a client application would."""
    store.create_task(s.task_id, s.steps, review_after=s.review_after)
    if s.resume_from is not None:  # a worker died after step 1
        store.start_step(s.task_id, 0)
        store.record_checkpoint(s.task_id, "step-1", 0)
        store.mark_failed(s.task_id, "worker lost")
        run("resume_from_checkpoint", s.task_id, s.resume_from)
        return
    result = run("start_workflow", s.task_id)
    if result["status"] == "waiting_review" and s.review is not None:
        time.sleep(0.3)  # a reviewer takes a moment; the gate's notification shows meanwhile
        run("resume_after_review", s.task_id, s.review)


@dataclass(frozen=True)
class Check:
    """One condition the demo must meet, and what it found."""

    name: str
    ok: bool
    found: str


def summary(
    screen: Screen,
    plan: list[Scenario],
    store: TaskStore,
    last: Any,
    reports: list[dict[str, Any]],
    received: list[dict[str, Any]],
) -> list[Check]:
    """Print the table, the counters and the checks: every row matches, each process reported,
    none dropped or left anything pending, and the subscriber received every event that the
    reporting processes published (told apart from a killed child's by their event ids)."""
    print()
    print(f"{'task':<28} {'database':<15} {'last notification':<18} {'expected':<10} match")
    wrong = []
    for s in plan:
        record = store.get_task(s.task_id)
        status = record.status.value if record else "missing"
        event_type = _type(last(s.task_id))
        ok = status == event_type == s.expected
        if not ok:
            wrong.append(f"{s.task_id}: database {status}, notification {event_type}")
        mark = screen.paint("yes", "32") if ok else screen.paint("NO", "31")
        print(f"{s.task_id:<28} {status:<15} {event_type:<18} {s.expected:<10} {mark}")
    published = sum(r["published"] for r in reports)
    dropped = sum(r["dropped"] for r in reports)
    pending = sum(r["pending"] for r in reports)
    coalesced = sum(r.get("coalesced", 0) for r in reports)
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, count in r["dropped_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    prefixes = {r["event_id_prefix"] for r in reports}
    unique = {e["event_id"] for e in received if "task_id" in e}
    theirs = {i for i in unique if i.rpartition("-")[0] in prefixes}
    print(
        f"\nnotifier, summed over the {len(reports)} worker processes that reported at exit: "
        f"published={published} coalesced={coalesced} dropped={dropped} pending={pending}; "
        f"the subscriber received {len(theirs)} of theirs, and {len(unique - theirs)} from "
        "processes that could not report (a child killed in mid-run)\n"
    )
    checks = [
        Check(
            f"each task's last notification matches its database status ({len(plan)} tasks)",
            not wrong,
            "; ".join(wrong) or "all match",
        ),
        Check(
            f"each of the worker's {PROCESSES} processes (main, {CHILDREN} children) reported "
            "its counters at exit",
            len(reports) == PROCESSES,
            f"{len(reports)} reported (pids {[r['pid'] for r in reports]})",
        ),
        Check("no notification dropped", dropped == 0, f"dropped={dropped} {reasons or ''}"),
        Check("no notification left pending at exit", pending == 0, f"pending={pending}"),
        Check(
            "the subscriber received every notification those processes published",
            published == len(theirs),
            f"published={published}, received={len(theirs)}",
        ),
    ]
    for check in checks:
        show(screen, check)
    return checks


def show(screen: Screen, check: Check) -> None:
    verdict = screen.paint("ok", "32") if check.ok else screen.paint("FAILED", "31")
    print(f"check: {check.name}: {verdict}" + ("" if check.ok else f" ({check.found})"))


class ImportJob:
    """The import chord, applied as a web application would, and what its channel must show."""

    def __init__(self, result: Any, workflow: str) -> None:
        self.result: Any = result
        self.workflow = workflow

    def events(self, collector: EventCollector) -> list[dict[str, Any]]:
        return [e for e in collector.events if e.get("workflow_id") == self.workflow]

    def release(self) -> None:
        """Let go of the results while their Redis still runs. Celery's redis backend holds the
        chord's members, as objects of its own, until something waits on them, and unsubscribes
        from each one as it lets go of it: at exit, after Redis stopped, that prints a traceback.
        Celery has no public call for this; ``remove_pending_result`` is its own way out."""
        if self.result is None:
            return
        backend, self.result = self.result.backend, None
        for mapping in backend._pending_results:
            for waiters in list(mapping.values()):
                for pending in list(waiters.values()):
                    backend.remove_pending_result(pending)
        gc.collect()

    def settled(self) -> bool:
        """Celery's result backend has every file's outcome, and the callback's."""
        return bool(self.result.parent.ready()) and self.result.state != "PENDING"

    def checks(self, events: list[dict[str, Any]]) -> list[Check]:
        ends = [e for e in events if _ends(e)]
        end = ends[-1] if ends else None
        failed = [r for r in self.result.parent.results if r.state == "FAILURE"]
        named = end is not None and end["data"].get("member") in {r.id for r in failed}
        return [
            Check(
                f"the import job ({len(IMPORT_FILES)} files, one bad) ended with exactly one "
                "terminal workflow event, failed, the last on its channel",
                len(ends) == 1 and end is events[-1] and end["type"] == "failed",
                f"terminal events: {[e['type'] for e in ends]}",
            ),
            Check(
                "it names the file Celery's result backend has as failed, and the callback "
                "never ran",
                named and len(failed) == 1 and self.result.state != "SUCCESS",
                f"named {end and end['data'].get('member')}, failed {[r.id for r in failed]}, "
                f"callback {self.result.state}",
            ),
        ]


def start_import_job(queue: str) -> ImportJob:
    """Apply the chord from this process, with the notifier installed here as in a web app:
    its declarations go through this process's own notifier."""
    import notifier
    from notifier.celery import workflow_id
    from tasks.celery_app import imports

    result = imports.import_job(IMPORT_FILES, FAILING_FILE, queue)
    notifier.flush(10)
    return ImportJob(result, workflow_id(result))


def _ends(event: dict[str, Any]) -> bool:
    return event["type"] in ("completed", "failed")


def _type(event: dict[str, Any] | None) -> str:
    return event["type"] if event else "-"


if __name__ == "__main__":
    sys.exit(main())
