"""The demo's verdict: each check it makes is named, and a failed one says what it found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.demo import CHILDREN, Scenario, Screen, summary
from tasks.store import Status, TaskStore


def report(published: int, dropped: int = 0, pending: int = 0) -> dict[str, Any]:
    """One child's counters, as tasks/reports.py writes them."""
    reasons = {"queue_full": dropped} if dropped else {}
    return {
        "pid": 1,
        "published": published,
        "dropped": dropped,
        "pending": pending,
        "dropped_by_reason": reasons,
    }


def checks_for(
    tmp_path: Path, reports: list[dict[str, Any]], received: int, last_type: str = "completed"
) -> dict[str, tuple[bool, str]]:
    """The demo's checks over one completed task whose last notification is ``last_type``."""
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    try:
        store.create_task("t-1", ["noop"])
        store.set_status("t-1", Status.COMPLETED)
        plan = [Scenario("t-1", ["noop"], "completed")]
        found = summary(Screen(), plan, store, lambda _: {"type": last_type}, reports, received)
    finally:
        store.close()
    return {check.name: (check.ok, check.found) for check in found}


def test_a_green_run_passes_every_check(tmp_path: Path) -> None:
    """Both children reported, nothing dropped or pending, all received: five checks pass."""
    reports = [report(published=2 + i) for i in range(CHILDREN)]
    checks = checks_for(tmp_path, reports, received=sum(r["published"] for r in reports))
    assert 5 == len(checks)
    assert all(ok for ok, _ in checks.values()), checks


def test_each_failed_check_is_named_with_what_it_found(tmp_path: Path) -> None:
    """A missing child report, a drop, a shortfall and a wrong row each fail their own check."""
    checks = checks_for(tmp_path, [report(3, dropped=1)], received=2, last_type="failed")
    failed = {name: found for name, (ok, found) in checks.items() if not ok}
    assert {
        "each task's last notification matches its database status (1 tasks)": (
            "t-1: database completed, notification failed"
        ),
        f"each of the {CHILDREN} worker children reported its counters at exit": (
            "1 reported (pids [1])"
        ),
        "no notification dropped": "dropped=1 {'queue_full': 1}",
        "the subscriber received every notification published": "published=3, received=2",
    } == failed
