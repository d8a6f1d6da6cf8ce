"""Configuration: strict validation that names the file and the key, lookup order, env override."""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from notifier import ConfigError, Notifier, NotifierConfig, load_config
from notifier.config import TABLES, QueueConfig, ReconnectConfig, RedisConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFIER_CONFIG", raising=False)
    monkeypatch.delenv("NOTIFIER_REDIS_URL", raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


BAD = [
    ("[queue]\nmaxsize = -5", "queue.maxsize must be a positive integer, got -5"),
    ("[queue]\nmaxsize = 0", "queue.maxsize must be a positive integer, got 0"),
    ("[queue]\nmaxsize = '10'", "queue.maxsize must be a positive integer, got '10'"),
    ("[queue]\nmaxsize = true", "queue.maxsize must be a positive integer, got True"),
    ("[queue]\nmaxsize = 1.5", "queue.maxsize must be a positive integer, got 1.5"),
    ("[queue]\nmaxsize = 10\nbatch_size = 11", "queue.batch_size must not exceed queue.maxsize"),
    (
        "[queue]\noverflow = 'drop_random'",
        "queue.overflow must be one of 'drop_newest', 'drop_oldest'",
    ),
    ("[queue]\nmax_event_bytes = 100", "queue.max_event_bytes must be an integer from 4096"),
    ("[queue]\nprogress_interval = -0.1", "queue.progress_interval must be a non-negative number"),
    (
        "[gateway]\nsecret = 'hunter2-secret-pw'",  # the value itself is never shown
        "gateway.secret must be empty or at least 32 characters, got a value of 17 characters",
    ),
    ("[queue]\nmax_size = 10", "queue.max_size is not a known key; did you mean queue.maxsize?"),
    ("[health]\nenable = true", "health.enable is not a known key; did you mean health.enabled?"),
    ("[helth]\nenabled = true", "[helth] is not a notifier table; did you mean [health]?"),
    ("[histroy]\nenabled = true", "[histroy] is not a notifier table; did you mean [history]?"),
    ("[zzz]\nx = 1", "[zzz] is not a notifier table. An application's own table must be declared"),
    ("app_tables = ['redis']", "app_tables names [redis], which is the notifier's own table"),
    ("app_tables = 'database'", "app_tables must be a list of table names, got 'database'"),
    ("queue = 5", "queue must be a table, got 5"),
    (
        "[redis]\nurl = 'http://localhost'",
        "redis.url must be a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
        "URL",
    ),
    ("[redis]\nurl = 'redis://localhost:notaport/0'", "redis.url must be a redis://"),
    ("[redis]\nurl = 'redis://localhost:6379/x'", "redis.url must be a redis://"),
    ("[redis]\nurl = 'redis://'", "redis.url must be a redis://"),
    (
        "[redis]\nurl = 6379",
        "redis.url must be a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
        "URL (with options",
    ),
    (
        "[redis]\nurl = 'redis://h/0?foo=bar'",
        "redis.url must be a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
        "URL",
    ),
    ("[redis]\nurl = 'redis+sentinel:///mymaster/0'", "redis.url names no hosts"),
    (
        "[redis]\nurl = 'redis+sentinel://h1:26379,h2:x/mymaster'",
        "redis.url host 'h2:x' has a bad port",
    ),
    (
        "[redis]\nurl = 'redis+sentinel://h1:99999/mymaster'",
        "redis.url host 'h1:99999' has a bad port",
    ),
    ("[redis]\nurl = 'redis+sentinel://h1:26379'", "redis.url needs the master's service name"),
    ("[redis]\nurl = 'redis+sentinel://h1/m/x'", "redis.url redis+sentinel://hosts/<service>/<db>"),
    (
        "[redis]\nurl = 'redis+sentinel://h1/m?sentinel_pasword=x'",
        "redis.url does not take the option 'sentinel_pasword' (did you mean sentinel_password?",
    ),
    (
        "[redis]\nurl = 'redis+sentinel://h1/m?tls=maybe'",
        "redis.url option tls must be true or false",
    ),
    ("[redis]\nurl = 'redis+cluster://'", "redis.url names no hosts"),
    ("[redis]\nurl = 'redis+cluster://h1:7000/1'", "redis.url a redis+cluster:// URL has no path"),
    ("[redis]\nconnect_timeout = 0", "redis.connect_timeout must be a positive number, got 0.0"),
    (
        "[redis]\npublish_timeout = -1.0",
        "redis.publish_timeout must be a positive number, got -1.0",
    ),
    ("[redis]\npublish_timeout = nan", "redis.publish_timeout must be a positive number, got nan"),
    ("[redis]\nchannel_prefix = 1", "redis.channel_prefix must be a string, got 1"),
    (
        "[reconnect]\ninitial_backoff = 2.0\nmax_backoff = 1.0",
        "reconnect.max_backoff must be at least reconnect.initial_backoff",
    ),
    ("[shutdown]\ndrain_timeout = -1", "shutdown.drain_timeout must be a non-negative number"),
    ("[shutdown]\ndrain_timeout = 1" + "0" * 400, "shutdown.drain_timeout must be a non-negative"),
    ("[logging]\nlevel = 'verbose'", "logging.level must be one of 'debug', 'info'"),
]


@pytest.mark.parametrize(("toml", "message"), BAD)
def test_bad_value_names_file_and_dotted_key(tmp_path: Path, toml: str, message: str) -> None:
    """Each kind of mistake raises ConfigError starting with the file name, then key and value."""
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert caught.value.path == str(path)
    assert caught.value.key is not None and message.lstrip("[").startswith(caught.value.key)


def test_password_in_a_bad_url_is_not_echoed(tmp_path: Path) -> None:
    """A rejected URL is shown with its password redacted."""
    path = write(tmp_path, "[redis]\nurl = 'redis://:hunter2@localhost:port/0'")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="nope.toml: file not found"):
        load_config(tmp_path / "nope.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    """A directory (or unreadable file) in place of the config is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot be read"):
        load_config(tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    """A syntax error is reported with the file and TOML's own line and column."""
    path = write(tmp_path, "[queue\nmaxsize = 1")
    with pytest.raises(ConfigError, match=r"config.toml: invalid TOML: .*line 1"):
        load_config(path)


def test_declared_application_tables_are_left_to_their_owners(tmp_path: Path) -> None:
    """Tables the application declares, in the file or in the call, are not validated; the same
    tables undeclared are an error naming them."""
    tables = "[database]\nurl = 'sqlite://'\nanything = 1\n[celery]\nx = [1]"
    in_file = write(tmp_path, "app_tables = ['database', 'celery']\n" + tables)
    assert NotifierConfig(path=str(in_file)) == load_config(in_file)
    undeclared = write(tmp_path, tables)
    with pytest.raises(ConfigError, match=r"\[database\] is not a notifier table"):
        load_config(undeclared)
    config = load_config(undeclared, app_tables=["database", "celery"])
    assert NotifierConfig(path=str(undeclared)) == config


def test_integers_are_accepted_for_seconds(tmp_path: Path) -> None:
    """`publish_timeout = 3` means 3.0 seconds."""
    config = load_config(write(tmp_path, "[redis]\npublish_timeout = 3"))
    assert 3.0 == config.redis.publish_timeout
    assert isinstance(config.redis.publish_timeout, float)


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$NOTIFIER_CONFIG, else ./config.toml, else defaults."""
    monkeypatch.chdir(tmp_path)
    assert NotifierConfig() == load_config(None)
    write(tmp_path, "[queue]\nmaxsize = 77")
    assert 77 == load_config(None).queue.maxsize
    other = tmp_path / "other.toml"
    other.write_text("[queue]\nmaxsize = 88")
    monkeypatch.setenv("NOTIFIER_CONFIG", str(other))
    assert 88 == load_config(None).queue.maxsize


def test_env_redis_url_overrides_file_and_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NOTIFIER_REDIS_URL wins over the file, for Notifier(None) too, and is validated."""
    monkeypatch.setenv("NOTIFIER_REDIS_URL", "redis://10.1.2.3:6380/2")
    path = write(tmp_path, "[redis]\nurl = 'redis://127.0.0.1:6379/0'")
    assert "redis://10.1.2.3:6380/2" == load_config(path).redis.url
    assert "redis://10.1.2.3:6380/2" == Notifier(None).config.redis.url
    monkeypatch.setenv("NOTIFIER_REDIS_URL", "nonsense")
    with pytest.raises(ConfigError, match="NOTIFIER_REDIS_URL: redis.url must be"):
        load_config(path)


def test_dataclasses_validate_when_built_in_code() -> None:
    """The same checks apply to configs built in Python, not only to files."""
    with pytest.raises(ConfigError, match="queue.batch_size must be a positive integer, got 0"):
        QueueConfig(batch_size=0)
    with pytest.raises(ConfigError, match="redis.url"):
        RedisConfig(url="localhost:6379")


def test_repr_hides_the_password() -> None:
    """Neither the URL property for logs nor the repr shows a password."""
    config = NotifierConfig(
        redis=RedisConfig(url="redis://user:s3cret@host:6379/0?password=s3cret")
    )
    assert "s3cret" not in repr(config)
    assert "redis://user:***@host:6379/0?password=***" == config.redis.safe_url


def test_shipped_config_documents_every_key_with_its_default() -> None:
    """config.toml lists every key of every notifier table, set to the built-in default."""
    with open(ROOT / "config.toml", "rb") as fh:
        shipped = tomllib.load(fh)
    for name, table in TABLES.items():
        defaults = {f.name: getattr(table(), f.name) for f in fields(table)}  # type: ignore[arg-type]
        as_toml = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
        assert as_toml == shipped[name], name
    assert NotifierConfig(path=os.path.join(ROOT, "config.toml")) == load_config(
        ROOT / "config.toml"
    )


def test_reconnect_delay_doubles_to_the_cap_with_jitter_down_to_half() -> None:
    """ReconnectConfig.delay: initial * 2**attempt, capped at max_backoff, times [0.5, 1.0]."""
    rc = ReconnectConfig(initial_backoff=0.1, max_backoff=1.0)
    for attempt, full in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10_000, 1.0)]:
        delays = [rc.delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > full / 10  # jittered, not one fixed value
