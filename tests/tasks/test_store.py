"""The task-status store of tasks/, against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tasks.store import Status, TaskNotFound, TaskRecord, TaskStore
from tasks.store import _sqlite_on_connect as sqlite_on_connect

from support.helpers import postgres_schema

STEPS = ["fetch", "review", "publish"]
WORKERS = 4
ROWS_PER_WORKER = 50


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for the test, dropped after it."""
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file in a directory not made yet, or a fresh PG schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'tasks.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[TaskStore]:
    """A store on the empty database, closed after the test."""
    task_store = TaskStore(store_url)
    yield task_store
    task_store.close()


def table_names(url: str) -> set[str]:
    """The tables of the database at ``url``, without creating anything there."""
    database = sa.make_url(url).database
    if url.startswith("sqlite") and not (database and Path(database).exists()):
        return set()
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def get(store: TaskStore, task_id: str) -> TaskRecord:
    """The record of a task the test created."""
    record = store.get_task(task_id)
    assert record is not None, task_id
    return record


def test_create_then_get_round_trips(store: TaskStore) -> None:
    """create_task returns a pending record equal to the one get_task reads back, in UTC."""
    before = datetime.now(UTC)
    created = store.create_task("t1", STEPS, review_after=2)
    assert created == store.get_task("t1")
    stamp = created.created_at
    expected = TaskRecord("t1", Status.PENDING, tuple(STEPS), 2, None, None, None, stamp, stamp)
    assert expected == created
    assert UTC == get(store, "t1").created_at.tzinfo
    assert before <= stamp <= datetime.now(UTC)


def test_get_unknown_task_returns_none(store: TaskStore) -> None:
    """An id that was never created reads as None."""
    store.create_task("known", STEPS)
    assert None is store.get_task("unknown")


def test_duplicate_task_id_raises_value_error_naming_it(store: TaskStore) -> None:
    """Creating an existing id raises ValueError naming it and leaves the first row alone."""
    store.create_task("dup", ["only"])
    with pytest.raises(ValueError, match="'dup'"):
        store.create_task("dup", STEPS)
    assert ("only",) == get(store, "dup").steps


@pytest.mark.parametrize(
    "steps",
    [[], (), "abc", ["fetch", ""], ["fetch", None]],
    ids=["empty-list", "empty-tuple", "bare-string", "empty-name", "not-a-string"],
)
def test_invalid_steps_raise_value_error(store: TaskStore, steps: Any) -> None:
    """Steps must be a non-empty list of non-empty names; nothing is stored otherwise."""
    with pytest.raises(ValueError, match="steps"):
        store.create_task("bad", steps)
    assert None is store.get_task("bad")


@pytest.mark.parametrize(
    ("steps", "review_after"),
    [(STEPS, 0), (STEPS, 3), (STEPS, -1), (STEPS, True), (STEPS, "1"), (["only"], 1)],
    ids=["zero", "after-last-step", "negative", "bool", "string", "single-step"],
)
def test_invalid_review_after_raises_value_error(
    store: TaskStore, steps: list[str], review_after: Any
) -> None:
    """review_after counts steps done before the review: 1 to len(steps) - 1."""
    with pytest.raises(ValueError, match="review_after"):
        store.create_task("bad", steps, review_after=review_after)
    assert None is store.get_task("bad")


def test_review_after_accepts_every_gate_between_steps(store: TaskStore) -> None:
    """A review gate may follow any step but the last."""
    for review_after in range(1, len(STEPS)):
        store.create_task(f"gate-{review_after}", STEPS, review_after=review_after)
        assert review_after == get(store, f"gate-{review_after}").review_after


def test_empty_task_id_raises_value_error(store: TaskStore) -> None:
    """An empty task id is refused before it reaches the database."""
    with pytest.raises(ValueError, match="task_id"):
        store.create_task("", STEPS)


def test_workflow_moves_through_steps_review_and_completion(store: TaskStore) -> None:
    """start_step, record_checkpoint and set_status record a whole workflow as it runs."""
    store.create_task("wf", STEPS, review_after=2)
    for index in range(2):
        store.start_step("wf", index)
        assert (Status.RUNNING, index) == (get(store, "wf").status, get(store, "wf").current_step)
        store.record_checkpoint("wf", f"cp-{index}", index)
        assert f"cp-{index}" == get(store, "wf").checkpoint
    store.set_status("wf", Status.WAITING_REVIEW)
    assert Status.WAITING_REVIEW == get(store, "wf").status
    store.start_step("wf", 2)
    store.record_checkpoint("wf", "cp-2", 2)
    store.set_status("wf", Status.COMPLETED)
    final = get(store, "wf")
    assert (Status.COMPLETED, 2, "cp-2", None) == (
        final.status,
        final.current_step,
        final.checkpoint,
        final.error,
    )
    assert [0, 1, 2] == [store.checkpoint_index("wf", f"cp-{i}") for i in range(3)]


def test_checkpoint_index_is_none_when_unknown_for_that_task(store: TaskStore) -> None:
    """checkpoint_index resolves only ids this task recorded."""
    store.create_task("a", STEPS)
    store.create_task("b", STEPS)
    store.record_checkpoint("a", "cp", 1)
    assert 1 == store.checkpoint_index("a", "cp")
    assert None is store.checkpoint_index("a", "other")
    assert None is store.checkpoint_index("b", "cp")
    assert None is store.checkpoint_index("missing", "cp")


def test_recording_a_checkpoint_again_is_idempotent(store: TaskStore) -> None:
    """A retried step may record its checkpoint again; it becomes the latest once more."""
    store.create_task("t", STEPS)
    store.record_checkpoint("t", "cp-0", 0)
    store.record_checkpoint("t", "cp-1", 1)
    store.record_checkpoint("t", "cp-0", 0)
    assert ("cp-0", 0, 1) == (
        get(store, "t").checkpoint,
        store.checkpoint_index("t", "cp-0"),
        store.checkpoint_index("t", "cp-1"),
    )


def test_checkpoint_id_at_another_index_raises_and_changes_nothing(store: TaskStore) -> None:
    """One checkpoint id cannot follow two different steps; the refused call is rolled back."""
    store.create_task("t", STEPS)
    store.record_checkpoint("t", "cp-0", 0)
    store.record_checkpoint("t", "cp-1", 1)
    before = get(store, "t")
    with pytest.raises(ValueError, match="'cp-0'"):
        store.record_checkpoint("t", "cp-0", 2)
    assert before == get(store, "t")
    assert 0 == store.checkpoint_index("t", "cp-0")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.start_step("t", 3),
        lambda s: s.start_step("t", -1),
        lambda s: s.start_step("t", True),
        lambda s: s.record_checkpoint("t", "cp", 3),
    ],
    ids=["start-past-end", "start-negative", "start-bool", "checkpoint-past-end"],
)
def test_step_index_out_of_range_raises_and_changes_nothing(
    store: TaskStore, call: Callable[[TaskStore], None]
) -> None:
    """Step indexes must point into the task's steps; a refused update is rolled back."""
    store.create_task("t", STEPS)
    before = get(store, "t")
    with pytest.raises(ValueError, match="step index"):
        call(store)
    assert before == get(store, "t")
    assert None is store.checkpoint_index("t", "cp")


def test_set_status_accepts_status_names_and_refuses_others(store: TaskStore) -> None:
    """A plain string naming a status works; any other string raises ValueError."""
    store.create_task("t", STEPS)
    store.set_status("t", "waiting_review")  # type: ignore[arg-type]  # what a caller may pass
    assert Status.WAITING_REVIEW == get(store, "t").status
    with pytest.raises(ValueError, match="done"):
        store.set_status("t", "done")  # type: ignore[arg-type]
    assert Status.WAITING_REVIEW == get(store, "t").status


def test_mark_failed_records_the_error_and_a_later_status_clears_it(store: TaskStore) -> None:
    """mark_failed stores status and error; a retry that sets running clears the old error."""
    store.create_task("t", STEPS)
    store.start_step("t", 1)
    store.mark_failed("t", "TimeoutError: review service did not answer")
    failed = get(store, "t")
    assert (Status.FAILED, "TimeoutError: review service did not answer", 1) == (
        failed.status,
        failed.error,
        failed.current_step,
    )
    store.set_status("t", Status.RUNNING)
    assert (Status.RUNNING, None) == (get(store, "t").status, get(store, "t").error)
    store.set_status("t", Status.FAILED, error="again")
    assert (Status.FAILED, "again") == (get(store, "t").status, get(store, "t").error)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.start_step("missing", 0),
        lambda s: s.record_checkpoint("missing", "cp", 0),
        lambda s: s.set_status("missing", Status.COMPLETED),
        lambda s: s.mark_failed("missing", "boom"),
    ],
    ids=["start_step", "record_checkpoint", "set_status", "mark_failed"],
)
def test_mutating_a_missing_task_raises_task_not_found(
    store: TaskStore, call: Callable[[TaskStore], None]
) -> None:
    """Every mutating method raises TaskNotFound, a LookupError, naming the missing id."""
    store.create_task("present", STEPS)
    with pytest.raises(TaskNotFound) as raised:
        call(store)
    assert isinstance(raised.value, LookupError)
    assert "missing" == raised.value.task_id
    assert None is store.checkpoint_index("missing", "cp")
    assert None is store.get_task("missing")


def test_updated_at_moves_forward_and_created_at_stays(store: TaskStore) -> None:
    """Each update moves updated_at forward; created_at never changes."""
    created = store.create_task("t", STEPS)
    store.start_step("t", 0)
    started = get(store, "t")
    store.record_checkpoint("t", "cp-0", 0)
    checkpointed = get(store, "t")
    store.mark_failed("t", "boom")
    failed = get(store, "t")
    assert created.updated_at < started.updated_at < checkpointed.updated_at < failed.updated_at
    assert {created.created_at} == {r.created_at for r in (started, checkpointed, failed)}


def test_schema_is_created_on_first_use(store_url: str) -> None:
    """A store on an empty database creates both tables when first used, and reuses them."""
    assert set() == table_names(store_url)
    first = TaskStore(store_url)
    try:
        assert set() == table_names(store_url)  # constructing connects to nothing
        assert None is first.get_task("t")
    finally:
        first.close()
    assert {"workflow_tasks", "workflow_checkpoints"} <= table_names(store_url)
    second = TaskStore(store_url)
    try:
        second.create_task("t", STEPS)
        assert Status.PENDING == get(second, "t").status
    finally:
        second.close()


def test_sqlite_database_is_switched_to_wal(tmp_path: Path) -> None:
    """SQLite files are put in WAL mode, so readers and a writer do not block each other."""
    path = tmp_path / "tasks.db"
    store = TaskStore(f"sqlite:///{path}")
    try:
        store.create_task("t", STEPS)
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert ("wal",) == conn.execute("PRAGMA journal_mode").fetchone()


def test_connections_that_open_a_new_sqlite_file_at_once_all_get_it(tmp_path: Path) -> None:
    """Eight connections that switch a new file to WAL at the same moment all succeed. SQLite
    answers one of two such switches "database is locked" without waiting on busy_timeout, and
    the store's connect hook must ask again rather than fail the caller. The race is won or
    lost in microseconds, so it is run in rounds."""
    for round_ in range(100):
        path = tmp_path / f"race-{round_}.db"
        connections = [
            sqlite3.connect(path, isolation_level=None, check_same_thread=False) for _ in range(8)
        ]
        barrier = threading.Barrier(len(connections))
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_connect_at_once, args=(c, barrier, errors))
            for c in connections
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for connection in connections:
            connection.close()
        assert [] == errors, f"round {round_}: {errors[0]!r}"
        with closing(sqlite3.connect(path)) as conn:
            assert ("wal",) == conn.execute("PRAGMA journal_mode").fetchone()


def _connect_at_once(
    connection: sqlite3.Connection, barrier: threading.Barrier, errors: list[BaseException]
) -> None:
    barrier.wait(timeout=30)
    try:
        sqlite_on_connect(connection, None)
    except BaseException as exc:  # noqa: BLE001 - reported by the test, with the round
        errors.append(exc)


def run_worker(url: str, worker: int, barrier: Barrier, results: Any) -> None:
    """Process body: create this worker's rows and drive each through the whole workflow."""
    try:
        store = TaskStore(url)
        try:
            barrier.wait(timeout=30)  # all start together, on a database with no tables yet
            for row in range(ROWS_PER_WORKER):
                task_id = f"w{worker}-{row}"
                store.create_task(task_id, STEPS, review_after=1)
                for index in range(len(STEPS)):
                    store.start_step(task_id, index)
                    store.record_checkpoint(task_id, f"{task_id}-cp{index}", index)
                store.mark_failed(task_id, "transient")
                store.set_status(task_id, Status.COMPLETED)
        finally:
            store.close()
    except BaseException:
        results.put((worker, traceback.format_exc()))
        raise
    results.put((worker, None))


def test_concurrent_processes_update_their_own_rows(store_url: str, store: TaskStore) -> None:
    """4 spawned processes hammering their own rows all finish, with every row completed."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=run_worker, args=(store_url, worker, barrier, results))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + 50
    outcomes: dict[int, str | None] = {}
    try:
        while len(outcomes) < WORKERS:
            remaining = deadline - time.monotonic()
            try:
                worker, error = results.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                pytest.fail(f"only workers {sorted(outcomes)} reported within the deadline")
            outcomes[worker] = error
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
    assert dict.fromkeys(range(WORKERS)) == outcomes
    assert [0] * WORKERS == [process.exitcode for process in processes]
    for worker in range(WORKERS):
        for row in range(ROWS_PER_WORKER):
            task_id = f"w{worker}-{row}"
            record = get(store, task_id)
            assert (Status.COMPLETED, 2, f"{task_id}-cp2", None) == (
                record.status,
                record.current_step,
                record.checkpoint,
                record.error,
            ), task_id
            assert 0 == store.checkpoint_index(task_id, f"{task_id}-cp0")
