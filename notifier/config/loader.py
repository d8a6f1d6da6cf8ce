"""Reading a configuration: where the file is looked up, and the strict check of its tables.

Every table the notifier owns is validated strictly: an unknown key, a wrong type or a bad value
raises :class:`ConfigError` naming the file and the dotted key, and a mistyped name gets the
nearest right one. A table the notifier does not own is a mistake too (``[helth]`` would leave
health off without a word), unless the application declared it: ``app_tables = [...]`` at the top
of the file, or ``load_config(path, app_tables=...)``. Declared tables are left to their owners,
who read them from ``NotifierConfig.path``. The tables themselves are ``notifier.config``'s.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from notifier.config import APP_TABLES_KEY, DEFAULT_PATH, ENV_CONFIG, TABLES, NotifierConfig
from notifier.config.checks import Check, Table, as_float, did_you_mean
from notifier.exceptions import ConfigError


def from_mapping(
    data: Mapping[str, Any], path: str | None = None, *, app_tables: Iterable[str] = ()
) -> NotifierConfig:
    """Build from parsed TOML. Every top-level table must be the notifier's or declared as
    the application's (``app_tables`` here, or the file's own ``app_tables`` key)."""
    try:
        _check_top_level(data, app_tables)
        tables = {name: _build_table(kind, data.get(name, {})) for name, kind in TABLES.items()}
    except ConfigError as exc:
        raise exc.in_file(path) if path else exc from None
    return NotifierConfig(**tables, path=path)  # type: ignore[arg-type]


def _check_top_level(data: Mapping[str, Any], app_tables: Iterable[str]) -> None:
    """Every top-level name is a notifier table, or one the application declared."""
    declared = set(app_tables) | _declared_in_file(data.get(APP_TABLES_KEY, []))
    for name in data:
        if name in TABLES or name in declared or name == APP_TABLES_KEY:
            continue
        quoted = json.dumps(name)
        hint = did_you_mean(name, [*TABLES, *declared], "[{}]") or "."
        raise ConfigError(
            f"[{name}] is not a notifier table{hint} "
            f"An application's own table must be declared: {APP_TABLES_KEY} = [{quoted}] at "
            f"the top of the file, or load_config(..., {APP_TABLES_KEY}=[{quoted}]) "
            f"(notifier tables: {', '.join(TABLES)})",
            key=name,
        )


def _declared_in_file(raw: Any) -> set[str]:
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise ConfigError(
            f"{APP_TABLES_KEY} must be a list of table names, got {raw!r}", key=APP_TABLES_KEY
        )
    for name in raw:
        if name in TABLES:
            raise ConfigError(
                f"{APP_TABLES_KEY} names [{name}], which is the notifier's own table",
                key=APP_TABLES_KEY,
            )
    return set(raw)


def _build_table(kind: type[Table], raw: Any) -> Table:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{kind.TABLE} must be a table, got {raw!r}", key=kind.TABLE)
    known = {f.name: f for f in fields(kind)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        f = known.get(key)
        if f is None:
            hint = did_you_mean(key, known, f"{kind.TABLE}.{{}}")
            raise ConfigError(
                f"{kind.TABLE}.{key} is not a known key{hint} (known: {', '.join(known)})",
                key=f"{kind.TABLE}.{key}",
            )
        check: Check = f.metadata["check"]
        if check.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = as_float(value)
        values[key] = value
    return kind(**kind.fill_defaults(values))


def default_config() -> NotifierConfig:
    """Built-in defaults with environment overrides applied; reads no file."""
    return NotifierConfig().with_env()


def load_config(
    path: str | os.PathLike[str] | None = None, *, app_tables: Iterable[str] = ()
) -> NotifierConfig:
    """Read and validate a config file.

    ``path=None`` looks up ``$NOTIFIER_CONFIG``, else ``./config.toml`` when present, else the
    built-in defaults. ``NOTIFIER_REDIS_URL`` overrides ``redis.url`` in every case.
    ``app_tables`` names the application's own tables in the file, besides those the file
    declares itself (``app_tables = [...]``); any other table is a ConfigError.
    """
    if path is None:
        path = os.environ.get(ENV_CONFIG) or (
            DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None
        )
    if path is None:
        return default_config()
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", path=name) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror or exc}", path=name) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=name) from None
    return from_mapping(data, path=name, app_tables=app_tables).with_env()
