"""Workflow task status in SQLite or PostgreSQL: one short transaction per call, no open session."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_REVIEW = "waiting_review"
    COMPLETED = "completed"
    FAILED = "failed"


class TaskNotFound(LookupError):
    """No row for this task id, so its status could not be updated."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    status: Status
    steps: tuple[str, ...]
    review_after: int | None  # a review gate once this many steps are done
    current_step: int | None  # 0-based index of the step started last
    checkpoint: str | None  # id of the latest checkpoint
    error: str | None
    created_at: datetime  # aware, UTC
    updated_at: datetime  # aware, UTC


class _UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend; SQLite stores them naive, so UTC is put back."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)


_metadata = sa.MetaData()
_tasks = sa.Table(
    "workflow_tasks",
    _metadata,
    sa.Column("task_id", sa.String, primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("steps", sa.JSON, nullable=False),
    sa.Column("review_after", sa.Integer),
    sa.Column("current_step", sa.Integer),
    sa.Column("checkpoint", sa.String),
    sa.Column("error", sa.Text),
    sa.Column("created_at", _UTCDateTime, nullable=False),
    sa.Column("updated_at", _UTCDateTime, nullable=False),
    sa.CheckConstraint(f"status IN {tuple(s.value for s in Status)}", name="known_status"),
)
_checkpoints = sa.Table(
    "workflow_checkpoints",
    _metadata,
    # The primary key is the unique (task_id, checkpoint_id) pair: ids are unique per task only.
    sa.Column("task_id", sa.ForeignKey(_tasks.c.task_id, ondelete="CASCADE"), primary_key=True),
    sa.Column("checkpoint_id", sa.String, primary_key=True),
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("created_at", _UTCDateTime, nullable=False),
)

_WRITE = "task_store_write"  # execution option for the SQLite "begin" hook: this will write


BUSY_TIMEOUT_S = 30.0


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 must not emit BEGIN by itself: _sqlite_on_begin chooses the kind of BEGIN.
    dbapi_connection.isolation_level = None
    # busy_timeout first: switching to WAL takes a lock another process may hold. WAL lets readers
    # and the writer run side by side; synchronous=NORMAL is crash-safe under WAL and fsyncs less.
    dbapi_connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    _switch_to_wal(dbapi_connection)
    dbapi_connection.executescript("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")


def _switch_to_wal(dbapi_connection: Any) -> None:
    """``journal_mode = WAL``, a no-op once the file is in WAL (it stays so). Connections that
    switch a new file at once each hold a shared lock and want an exclusive one: SQLite answers
    one of them "database is locked" at once, without waiting on busy_timeout (waiting could
    deadlock). That one lets its lock go and asks again, within the same busy_timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # a backoff between tries: the other connection finishes its switch
        pause = min(pause * 2, 0.2)


def _sqlite_on_begin(conn: Connection) -> None:
    # A deferred transaction that reads, then writes after another process wrote, fails at once
    # with "database is locked" (busy_timeout is not consulted). So writes take the lock up front
    # and queue on busy_timeout; reads stay deferred and, under WAL, never wait for a writer.
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Recording a failure must still work after the database server restarted.
        return sa.create_engine(parsed, pool_pre_ping=True)
    path = parsed.database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed)
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _validated_steps(task_id: str, steps: Sequence[str], review_after: int | None) -> list[str]:
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"task_id must be a non-empty string, got {task_id!r}")
    # A bare string is a Sequence[str] too, and would silently become one step per character.
    names = [] if isinstance(steps, str) else list(steps)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"steps of task {task_id!r} must be a non-empty list of names: {steps!r}")
    if review_after is not None and not (
        type(review_after) is int and 0 < review_after < len(names)
    ):
        raise ValueError(f"review_after of task {task_id!r} must be 1 to {len(names) - 1}")
    return names


class TaskStore:
    """Task status rows behind a SQLAlchemy URL; the tables are created on first use."""

    def __init__(self, url: str) -> None:
        self._engine = _make_engine(url)
        self._writer = self._engine.execution_options(**{_WRITE: True})  # same pool and hooks
        self._pid = os.getpid()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def create_task(
        self, task_id: str, steps: Sequence[str], review_after: int | None = None
    ) -> TaskRecord:
        """Store a new pending task; ``review_after=k`` gates it for review after its k-th step."""
        names = _validated_steps(task_id, steps, review_after)
        now = datetime.now(UTC)
        record = TaskRecord(
            task_id, Status.PENDING, tuple(names), review_after, None, None, None, now, now
        )
        with self._transaction(write=True) as conn:
            try:
                conn.execute(sa.insert(_tasks).values(asdict(record)))
            except IntegrityError as exc:  # only the primary key can be violated here
                raise ValueError(f"task {task_id!r} already exists") from exc
        return record

    def get_task(self, task_id: str) -> TaskRecord | None:
        with self._transaction(write=False) as conn:
            row = conn.execute(sa.select(_tasks).where(_tasks.c.task_id == task_id)).first()
        if row is None:
            return None
        fields = row._asdict() | {"status": Status(row.status), "steps": tuple(row.steps)}
        return TaskRecord(**fields)

    def start_step(self, task_id: str, index: int) -> None:
        """Make step ``index`` (0-based) the running one."""
        with self._transaction(write=True) as conn:
            self._update(conn, task_id, index, status=Status.RUNNING, current_step=index)

    def record_checkpoint(self, task_id: str, checkpoint_id: str, index: int) -> None:
        """Record ``checkpoint_id`` after step ``index`` as the latest; a retry may repeat it."""
        with self._transaction(write=True) as conn:
            # The update locks the task row first, so the look-up cannot race another insert.
            self._update(conn, task_id, index, checkpoint=checkpoint_id)
            known = self._checkpoint_index(conn, task_id, checkpoint_id)
            if known is None:
                row = {"task_id": task_id, "checkpoint_id": checkpoint_id, "step_index": index}
                conn.execute(sa.insert(_checkpoints), row | {"created_at": datetime.now(UTC)})
            elif known != index:
                raise ValueError(f"checkpoint {checkpoint_id!r} already follows step {known}")

    def checkpoint_index(self, task_id: str, checkpoint_id: str) -> int | None:
        """The step index ``checkpoint_id`` follows, or None if this task never recorded it."""
        with self._transaction(write=False) as conn:
            return self._checkpoint_index(conn, task_id, checkpoint_id)

    def set_status(self, task_id: str, status: Status, *, error: str | None = None) -> None:
        """Set any status (no transition rules) and the error text; None clears an old error."""
        status = Status(status)  # a plain string is accepted if it names a status
        with self._transaction(write=True) as conn:
            self._update(conn, task_id, None, status=status, error=error)

    def mark_failed(self, task_id: str, error: str) -> None:
        self.set_status(task_id, Status.FAILED, error=error)

    def close(self) -> None:
        self._engine.dispose()

    def _update(self, conn: Connection, task_id: str, index: int | None, **values: Any) -> None:
        """Update the task row and its updated_at, then check ``index`` against its steps."""
        statement = (
            sa.update(_tasks)
            .where(_tasks.c.task_id == task_id)
            .values(values | {"updated_at": datetime.now(UTC)})
            .returning(_tasks.c.steps)
        )
        steps: list[str] | None = conn.execute(statement).scalar()
        if steps is None:
            raise TaskNotFound(task_id)
        # Raising now rolls the update back; checking after it saves a round trip on success.
        if index is not None and not (type(index) is int and 0 <= index < len(steps)):
            raise ValueError(f"step index of task {task_id!r} must be 0 to {len(steps) - 1}")

    @staticmethod
    def _checkpoint_index(conn: Connection, task_id: str, checkpoint_id: str) -> int | None:
        key = (_checkpoints.c.task_id == task_id) & (_checkpoints.c.checkpoint_id == checkpoint_id)
        index: int | None = conn.execute(sa.select(_checkpoints.c.step_index).where(key)).scalar()
        return index

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        self._ensure_ready()
        with (self._writer if write else self._engine).begin() as conn:
            yield conn

    def _ensure_ready(self) -> None:
        if os.getpid() != self._pid:
            # Forked (Celery prefork): forget the parent's pooled connections without closing them.
            self._engine.dispose(close=False)
            self._pid = os.getpid()
            self._schema_lock = threading.Lock()  # the inherited one may have been held at fork
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                with self._writer.begin() as conn:
                    _metadata.create_all(conn, checkfirst=True)
            except DBAPIError:
                # Another process created a table between our check and our CREATE (PostgreSQL;
                # on SQLite BEGIN IMMEDIATE serialises the two). The check now sees the tables.
                with self._writer.begin() as conn:
                    _metadata.create_all(conn, checkfirst=True)
            self._schema_ready = True
