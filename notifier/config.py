"""Configuration: frozen dataclasses that mirror the TOML tables, and their strict loader.

Every table the notifier owns is validated strictly: an unknown key, a wrong type or a bad value
raises :class:`ConfigError` naming the file and the dotted key. Tables that belong to someone else
(``[database]``, ``[celery]``) are left to their owners, who read them from ``NotifierConfig.path``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from redis.asyncio.connection import ConnectionPool

from notifier.exceptions import ConfigError
from notifier.redaction import redact_url

ENV_CONFIG = "NOTIFIER_CONFIG"
ENV_REDIS_URL = "NOTIFIER_REDIS_URL"
DEFAULT_PATH = "config.toml"

Overflow = Literal["drop_newest", "drop_oldest"]
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class Check:
    """What a key must hold: the type TOML must give, a predicate, and the words for both."""

    kind: type
    expected: str
    ok: Callable[[Any], bool] = lambda _value: True

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and self.kind is not bool:
            return False  # bool is an int subclass; `maxsize = true` is a mistake, not 1
        if self.kind is float and isinstance(value, int):
            value = _as_float(value)
        return isinstance(value, self.kind) and self.ok(value)


def _as_float(value: int) -> float | int:
    """An integer given for a number of seconds, as a float; one too big for a float stays an
    int, which the check then refuses (a ConfigError, not an OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return value


POSITIVE_INT = Check(int, "a positive integer", lambda v: v > 0)
POSITIVE = Check(float, "a positive number", lambda v: math.isfinite(v) and v > 0)
NON_NEGATIVE = Check(float, "a non-negative number", lambda v: math.isfinite(v) and v >= 0)
ANY_STR = Check(str, "a string")
# At least room for a failure report with a long task id; at most Redis's 512 MiB string limit.
EVENT_BYTES = Check(
    int, "an integer from 4096 to 536870912", lambda v: 4096 <= v <= 512 * 1024 * 1024
)
BOOL = Check(bool, "true or false")


PORT = Check(int, "a port number from 0 (any free port) to 65535", lambda v: 0 <= v <= 65535)
HOST = Check(str, "a host name or address", lambda v: bool(v.strip()))


def one_of(*choices: str) -> Check:
    return Check(str, "one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def setting(default: Any, check: Check) -> Any:
    """A dataclass field that carries the check its value must pass."""
    return field(default=default, metadata={"check": check})


def _is_redis_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            ok = bool(parts.path)
        else:
            _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
            db = parts.path.lstrip("/")
            ok = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
            ok = ok and (db == "" or db.isdigit())
        # The notifier thread builds its connection from the URL, options included: anything
        # redis-py would refuse there must be refused here, before anything starts.
        if ok:
            ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call]
        return ok
    except (ValueError, TypeError):
        return False


REDIS_URL = Check(
    str, "a redis://, rediss:// or unix:// URL (with options redis-py accepts)", _is_redis_url
)


class Table:
    """Validation shared by every table: each field's check, then the table's own rules."""

    TABLE: ClassVar[str]

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check: Check = f.metadata["check"]
            value = getattr(self, f.name)
            if not check.accepts(value):
                shown = (
                    redact_url(value) if check is REDIS_URL and isinstance(value, str) else value
                )
                raise ConfigError(
                    f"{self.TABLE}.{f.name} must be {check.expected}, got {shown!r}",
                    key=f"{self.TABLE}.{f.name}",
                )
        self.check_table()

    def check_table(self) -> None:
        """Rules that involve more than one key; overridden where a table has them."""

    @classmethod
    def fill_defaults(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Defaults that depend on other keys of a file's table; overridden where needed."""
        return values

    def at_least(self, key: str, other: str) -> None:
        """``key`` must not be below ``other``, a key of the same table."""
        value, floor = getattr(self, key), getattr(self, other)
        if value < floor:
            self.fail(key, f"must be at least {self.TABLE}.{other} ({floor}), got {value}")

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.TABLE}.{key} {message}", key=f"{self.TABLE}.{key}")


@dataclass(frozen=True, slots=True)
class RedisConfig(Table):
    TABLE: ClassVar[str] = "redis"
    url: str = setting("redis://127.0.0.1:6379/0", REDIS_URL)
    channel_prefix: str = setting("task:", ANY_STR)
    connect_timeout: float = setting(2.0, POSITIVE)
    publish_timeout: float = setting(2.0, POSITIVE)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return (
            f"RedisConfig(url={self.safe_url!r}, channel_prefix={self.channel_prefix!r}, "
            f"connect_timeout={self.connect_timeout}, publish_timeout={self.publish_timeout})"
        )


@dataclass(frozen=True, slots=True)
class QueueConfig(Table):
    TABLE: ClassVar[str] = "queue"
    maxsize: int = setting(10_000, POSITIVE_INT)
    batch_size: int = setting(256, POSITIVE_INT)
    overflow: Overflow = setting("drop_newest", one_of("drop_newest", "drop_oldest"))
    max_event_bytes: int = setting(65_536, EVENT_BYTES)

    @classmethod
    def fill_defaults(cls, values: dict[str, Any]) -> dict[str, Any]:
        # `maxsize = 100` alone should just work: the default batch shrinks to fit the queue.
        maxsize = values.get("maxsize")
        if "batch_size" not in values and isinstance(maxsize, int) and maxsize > 0:
            values["batch_size"] = min(maxsize, cls().batch_size)
        return values

    def check_table(self) -> None:
        if self.batch_size > self.maxsize:
            self.fail(
                "batch_size",
                f"must not exceed queue.maxsize ({self.maxsize}), got {self.batch_size}",
            )


@dataclass(frozen=True, slots=True)
class ReconnectConfig(Table):
    TABLE: ClassVar[str] = "reconnect"
    initial_backoff: float = setting(0.05, POSITIVE)
    max_backoff: float = setting(5.0, POSITIVE)

    def check_table(self) -> None:
        self.at_least("max_backoff", "initial_backoff")


@dataclass(frozen=True, slots=True)
class ShutdownConfig(Table):
    TABLE: ClassVar[str] = "shutdown"
    drain_timeout: float = setting(5.0, NON_NEGATIVE)


@dataclass(frozen=True, slots=True)
class LoggingConfig(Table):
    TABLE: ClassVar[str] = "logging"
    level: str = setting("info", one_of(*LOG_LEVELS))


@dataclass(frozen=True, slots=True)
class HealthConfig(Table):
    TABLE: ClassVar[str] = "health"
    enabled: bool = setting(False, BOOL)
    host: str = setting("127.0.0.1", HOST)
    port: int = setting(9477, PORT)
    heartbeat_interval: float = setting(1.0, POSITIVE)
    stale_after: float = setting(2.0, POSITIVE)
    max_loop_lag: float = setting(0.5, POSITIVE)
    state_dir: str = setting("", ANY_STR)

    def check_table(self) -> None:
        self.at_least("stale_after", "heartbeat_interval")


@dataclass(frozen=True, slots=True)
class HistoryConfig(Table):
    TABLE: ClassVar[str] = "history"
    enabled: bool = setting(False, BOOL)
    maxlen: int = setting(1000, POSITIVE_INT)
    ttl_seconds: int = setting(86_400, POSITIVE_INT)
    key_prefix: str = setting("task-history:", Check(str, "a non-empty string", bool))


TABLES: dict[str, type[Table]] = {
    "redis": RedisConfig,
    "queue": QueueConfig,
    "reconnect": ReconnectConfig,
    "shutdown": ShutdownConfig,
    "logging": LoggingConfig,
    "health": HealthConfig,
    "history": HistoryConfig,
}


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """The whole notifier configuration; ``path`` is the file it came from, if any."""

    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    path: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str | None = None) -> NotifierConfig:
        """Build from parsed TOML; tables the notifier does not own are ignored."""
        try:
            tables = {name: _build_table(kind, data.get(name, {})) for name, kind in TABLES.items()}
        except ConfigError as exc:
            raise exc.in_file(path) if path else exc from None
        return cls(**tables, path=path)  # type: ignore[arg-type]

    def with_env(self, environ: Mapping[str, str] | None = None) -> NotifierConfig:
        """This configuration with ``NOTIFIER_REDIS_URL`` applied, when it is set."""
        env = os.environ if environ is None else environ
        url = env.get(ENV_REDIS_URL)
        if not url:
            return self
        try:
            return replace(self, redis=replace(self.redis, url=url))
        except ConfigError as exc:
            raise ConfigError(f"{ENV_REDIS_URL}: {exc.reason}", key=exc.key) from None


def _build_table(kind: type[Table], raw: Any) -> Table:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{kind.TABLE} must be a table, got {raw!r}", key=kind.TABLE)
    known = {f.name: f for f in fields(kind)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(
                f"{kind.TABLE}.{key} is not a known key (known: {', '.join(known)})",
                key=f"{kind.TABLE}.{key}",
            )
        check: Check = f.metadata["check"]
        if check.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = _as_float(value)
        values[key] = value
    return kind(**kind.fill_defaults(values))


def default_config() -> NotifierConfig:
    """Built-in defaults with environment overrides applied; reads no file."""
    return NotifierConfig().with_env()


def load_config(path: str | os.PathLike[str] | None = None) -> NotifierConfig:
    """Read and validate a config file.

    ``path=None`` looks up ``$NOTIFIER_CONFIG``, else ``./config.toml`` when present, else the
    built-in defaults. ``NOTIFIER_REDIS_URL`` overrides ``redis.url`` in every case.
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
    return NotifierConfig.from_mapping(data, path=name).with_env()
