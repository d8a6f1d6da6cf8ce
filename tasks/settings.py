"""The application's own tables of config.toml: ``[database]`` and ``[celery]``.

They live in the same file as the notifier's tables and are checked the same way: an unknown key
or a wrong type raises ConfigError naming the file and the dotted key. The repository's
config.toml is the notifier's own (what ``notifier init`` writes) and sets neither, so every key
below has its default; a file that sets them declares them first (``app_tables = ["database",
"celery"]`` before its first table), so that ``notifier check-config`` accepts it too::

    [database]
    # The task-status store (SQLAlchemy URL); $TASKS_DATABASE_URL overrides it. A relative
    # sqlite:/// path is relative to the config file. `make demo` uses a temporary SQLite file
    # unless this key (or the variable) is set.
    url = "postgresql+psycopg://user@host:5432/dbname"

    [celery]
    # Broker and result backend; both default to redis.url (or $NOTIFIER_REDIS_URL).
    broker_url = "redis://127.0.0.1:6379/0"
    result_backend = "redis://127.0.0.1:6379/0"
    # notifier.celery.install(..., flush_on_task_end=): each task waits, when it ends, for its
    # own notifications to reach a Redis believed reachable, so that a worker child killed
    # later loses none of them (default true).
    flush_on_task_end = true
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier import ConfigError, NotifierConfig, load_config
from notifier.config import did_you_mean

APP_TABLES = ("database", "celery")  # declared to load_config: ours, not the notifier's
DEFAULT_DATABASE = "sqlite:///var/tasks.db"  # relative paths are relative to the config file
ENV_DATABASE_URL = "TASKS_DATABASE_URL"  # overrides [database] url, as NOTIFIER_REDIS_URL does


@dataclass(frozen=True)
class AppSettings:
    notifier: NotifierConfig
    database_url: str
    broker_url: str
    result_backend: str
    flush_on_task_end: bool = True
    database_configured: bool = False  # [database] url was given, not the built-in default


def load_settings(path: str | os.PathLike[str] | None = None) -> AppSettings:
    """Read the notifier's tables and the app's from one file (same lookup as load_config)."""
    notifier = load_config(path, app_tables=APP_TABLES)
    raw: dict[str, Any] = {}
    if notifier.path is not None:
        with open(notifier.path, "rb") as fh:
            raw = tomllib.load(fh)
    where = notifier.path
    database = _table(raw, "database", {"url": str}, where)
    celery = _table(
        raw,
        "celery",
        {"broker_url": str, "result_backend": str, "flush_on_task_end": bool},
        where,
    )
    base = Path(notifier.path).resolve().parent if notifier.path else Path.cwd()
    database_url = os.environ.get(ENV_DATABASE_URL) or database.get("url")
    redis_url = notifier.redis.url
    return AppSettings(
        notifier=notifier,
        database_url=_anchor_sqlite(database_url or DEFAULT_DATABASE, base),
        broker_url=celery.get("broker_url", redis_url),
        result_backend=celery.get("result_backend", redis_url),
        flush_on_task_end=celery.get("flush_on_task_end", True),
        database_configured=database_url is not None,
    )


def _table(
    raw: dict[str, Any], name: str, keys: dict[str, type], where: str | None
) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name} must be a table", path=where, key=name)
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            known = ", ".join(sorted(keys))
            hint = did_you_mean(key, keys, f"{name}.{{}}")
            raise ConfigError(
                f"{name}.{key} is not a known key{hint} (known: {known})",
                path=where,
                key=f"{name}.{key}",
            )
        if not isinstance(value, kind) or value == "":
            expected = "true or false" if kind is bool else "a non-empty string"
            raise ConfigError(
                f"{name}.{key} must be {expected}, got {value!r}", path=where, key=f"{name}.{key}"
            )
    return table


def _anchor_sqlite(url: str, base: Path) -> str:
    """sqlite:///relative.db is relative to the config file, not to wherever the worker runs."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(base / url[len(prefix) :])
    return url
