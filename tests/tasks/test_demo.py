"""The demo's verdict: each check it makes is named, and a failed one says what it found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.demo import PROCESSES, Scenario, Screen, summary
from tasks.store import Status, TaskStore


def report(prefix: str, published: int, dropped: int = 0, pending: int = 0) -> dict[str, Any]:
    """One process's counters, as tasks/reports.py writes them."""
    reasons = {"queue_full": dropped} if dropped else {}
    return {
        "pid": 1,
        "event_id_prefix": prefix,
        "published": published,
        "dropped": dropped,
        "pending": pending,
        "dropped_by_reason": reasons,
    }


def received(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Events as the subscriber decodes them: ``counts[prefix]`` of each process's."""
    return [{"event_id": f"{p}-{i:x}", "task_id": "t"} for p, n in counts.items() for i in range(n)]


def checks_for(
    tmp_path: Path,
    reports: list[dict[str, Any]],
    events: list[dict[str, Any]],
    last_type: str = "completed",
) -> dict[str, tuple[bool, str]]:
    """The demo's checks over one completed task whose last notification is ``last_type``."""
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    try:
        store.create_task("t-1", ["noop"])
        store.set_status("t-1", Status.COMPLETED)
        plan = [Scenario("t-1", ["noop"], "completed")]
        found = summary(Screen(), plan, store, lambda _: {"type": last_type}, reports, events)
    finally:
        store.close()
    return {check.name: (check.ok, check.found) for check in found}


def test_a_green_run_passes_every_check(tmp_path: Path) -> None:
    """Every process reported, nothing dropped or pending, all of theirs received (and some of
    a killed child's, which count for nothing; a workflow's events neither, since a member's
    step is counted as its event): five checks pass."""
    reports = [report(f"p{i}", published=2 + i) for i in range(PROCESSES)]
    workflow_events = [{"event_id": "p0-ff", "workflow_id": "w"}] * 2
    events = received({"p0": 2, "p1": 3, "p2": 4, "killed": 5}) + workflow_events
    checks = checks_for(tmp_path, reports, events)
    assert 5 == len(checks)
    assert all(ok for ok, _ in checks.values()), checks


def test_each_failed_check_is_named_with_what_it_found(tmp_path: Path) -> None:
    """A missing child report, a drop, a shortfall and a wrong row each fail their own check."""
    checks = checks_for(
        tmp_path, [report("p0", 3, dropped=1)], received({"p0": 2, "other": 9}), "failed"
    )
    failed = {name: found for name, (ok, found) in checks.items() if not ok}
    assert {
        "each task's last notification matches its database status (1 tasks)": (
            "t-1: database completed, notification failed"
        ),
        f"each of the worker's {PROCESSES} processes (main, {PROCESSES - 1} children) reported "
        "its counters at exit": "1 reported (pids [1])",
        "no notification dropped": "dropped=1 {'queue_full': 1}",
        "the subscriber received every notification those processes published": (
            "published=3, received=2"
        ),
    } == failed
