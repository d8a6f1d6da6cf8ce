"""Configuration: frozen dataclasses that mirror the TOML tables, each checked as it is built.

What each key may hold, and the checking itself, is ``checks``'s; reading a file and checking its
tables and keys by name is ``loader``'s; the three forms of ``redis.url`` are ``urls``'s.
``did_you_mean`` is public: an application checking its own tables gives the same hints.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, ClassVar, Literal

from notifier.config.checks import (
    ANY_STR,
    BOOL,
    EVENT_BYTES,
    HOST,
    NON_NEGATIVE,
    PORT,
    POSITIVE,
    POSITIVE_INT,
    REDIS_URL,
    Check,
    Table,
    is_network,
    is_origin,
    list_of,
    one_of,
    setting,
)
from notifier.config.checks import did_you_mean as did_you_mean  # public: see above
from notifier.config.redaction import redact_url
from notifier.exceptions import ConfigError

ENV_CONFIG = "NOTIFIER_CONFIG"
ENV_REDIS_URL = "NOTIFIER_REDIS_URL"
ENV_GATEWAY_SECRET = "NOTIFIER_GATEWAY_SECRET"
DEFAULT_PATH = "config.toml"
# The top-level key a file declares its application's own tables with.
APP_TABLES_KEY = "app_tables"
# Package data beside this module: the commented file of every table and key with its default.
DEFAULT_TOML = "default.toml"

Overflow = Literal["drop_newest", "drop_oldest"]
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class RedisConfig(Table):
    TABLE: ClassVar[str] = "redis"
    url: str = setting("redis://127.0.0.1:6379/0", REDIS_URL)
    channel_prefix: str = setting("task:", ANY_STR)
    connect_timeout: float = setting(2.0, POSITIVE)
    publish_timeout: float = setting(2.0, POSITIVE)
    wait_for_replica: bool = setting(True, BOOL)
    replica_timeout: float = setting(0.5, POSITIVE)

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
    progress_interval: float = setting(0.1, NON_NEGATIVE)
    linger: float = setting(0.01, NON_NEGATIVE)

    @classmethod
    def fill_defaults(cls, values: dict[str, Any]) -> dict[str, Any]:
        # `maxsize = 100` alone should just work: the default batch shrinks to fit the queue.
        maxsize = values.get("maxsize")
        if "batch_size" not in values and isinstance(maxsize, int) and maxsize > 0:
            values["batch_size"] = min(maxsize, cls().batch_size)
        return values

    def check_table(self) -> None:
        if self.linger > 1.0:
            self.fail("linger", f"must be at most 1 second, got {self.linger}")
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

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0 for the first): doubling from
        ``initial_backoff`` up to ``max_backoff``, then jittered down to between half and all of
        it, so that many clients that lost one server do not come back in step."""
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** min(attempt, 32))
        return base * random.uniform(0.5, 1.0)


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


SECRET_MIN = 32  # characters: an HMAC key of at least 256 bits of text


def _cookie_name(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)


def _header_bytes(size: int) -> bool:
    return 1024 <= size <= 1_048_576


@dataclass(frozen=True, slots=True)
class GatewayConfig(Table):
    """The browser gateway (``notifier.gateway``): who may read, how much, where it listens."""

    TABLE: ClassVar[str] = "gateway"
    # Signs the per-task tokens; "" means none (loopback clients only, without tokens).
    # $NOTIFIER_GATEWAY_SECRET overrides it, and is the place for it.
    secret: str = setting(
        "",
        Check(
            str,
            f"empty or at least {SECRET_MIN} characters",
            lambda v: v == "" or len(v) >= SECRET_MIN,
        ),
        secret=True,
    )
    allow_anonymous: bool = setting(False, BOOL)
    host: str = setting("127.0.0.1", HOST)
    port: int = setting(8000, PORT)
    max_connections: int = setting(10_000, POSITIVE_INT)
    client_buffer: int = setting(1000, POSITIVE_INT)
    heartbeat_interval: float = setting(15.0, POSITIVE)
    retry_ms: int = setting(2000, POSITIVE_INT)
    history_connections: int = setting(4, POSITIVE_INT)
    # ``notifier gateway``'s processes on one port; 0: one per core.
    workers: int = setting(0, Check(int, "0 (one per core) or more", lambda v: v >= 0))
    # Origins (``https://app.example.com``, or ``*``) whose pages may open a stream. Empty: the
    # gateway's own origin only when a secret is set, any origin when none is (loopback only).
    allowed_origins: tuple[str, ...] = setting((), list_of('origins or "*"', is_origin))
    # Streams one client address may hold open at once, in each worker process.
    max_connections_per_client: int = setting(64, POSITIVE_INT)
    # Proxies (addresses or networks) whose X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = setting((), list_of("addresses or networks", is_network))
    # The cookie a token may come in, besides ``Authorization: Bearer`` and ``?token=``.
    token_cookie: str = setting("notifier_token", Check(str, "a cookie name", _cookie_name))
    # Seconds a client may take none of what is sent to it before it is cut off.
    send_timeout: float = setting(30.0, POSITIVE)
    # Seconds a client has to send its request's headers (a slow client is cut off after it).
    header_timeout: float = setting(10.0, POSITIVE)
    # Bytes of request line and headers at most: 414 or 431 beyond.
    max_header_bytes: int = setting(16_384, Check(int, "from 1024 to 1048576", _header_bytes))

    def check_table(self) -> None:
        for key in ("allowed_origins", "trusted_proxies"):
            object.__setattr__(self, key, tuple(getattr(self, key)))  # TOML gives a list


TABLES: dict[str, type[Table]] = {
    "redis": RedisConfig,
    "queue": QueueConfig,
    "reconnect": ReconnectConfig,
    "shutdown": ShutdownConfig,
    "logging": LoggingConfig,
    "health": HealthConfig,
    "history": HistoryConfig,
    "gateway": GatewayConfig,
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
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    path: str | None = None

    def with_env(self, environ: Mapping[str, str] | None = None) -> NotifierConfig:
        """This configuration with ``NOTIFIER_REDIS_URL`` and ``NOTIFIER_GATEWAY_SECRET``
        applied, where they are set."""
        env = os.environ if environ is None else environ
        config = self
        url = env.get(ENV_REDIS_URL)
        if url:
            try:
                config = replace(config, redis=replace(config.redis, url=url))
            except ConfigError as exc:
                raise ConfigError(f"{ENV_REDIS_URL}: {exc.reason}", key=exc.key) from None
        secret = env.get(ENV_GATEWAY_SECRET)
        if secret:
            try:
                config = replace(config, gateway=replace(config.gateway, secret=secret))
            except ConfigError as exc:
                raise ConfigError(f"{ENV_GATEWAY_SECRET}: {exc.reason}", key=exc.key) from None
        return config


def default_toml() -> str:
    """The commented config file that ``notifier init`` writes (the repository's config.toml is
    the same text): every table and key of the notifier's, each set to its default."""
    return resources.files(__name__).joinpath(DEFAULT_TOML).read_text(encoding="utf-8")
