"""The application's [database] and [celery] tables: defaults, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier import ConfigError
from tasks.settings import ENV_DATABASE_URL, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFIER_CONFIG", "NOTIFIER_REDIS_URL", ENV_DATABASE_URL):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_follow_the_notifier_redis_and_the_config_file(tmp_path: Path) -> None:
    """Broker and backend default to redis.url; a relative SQLite path sits beside the file."""
    path = write(tmp_path, '[redis]\nurl = "redis://127.0.0.1:6390/3"\n')
    settings = load_settings(path)
    assert "redis://127.0.0.1:6390/3" == settings.broker_url == settings.result_backend
    assert f"sqlite:///{tmp_path.resolve() / 'var' / 'tasks.db'}" == settings.database_url
    assert settings.flush_on_task_end is True
    assert settings.database_configured is False


def test_env_overrides_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$TASKS_DATABASE_URL wins over [database] url."""
    path = write(tmp_path, '[database]\nurl = "sqlite:///a.db"\n')
    assert f"sqlite:///{tmp_path.resolve() / 'a.db'}" == load_settings(path).database_url
    monkeypatch.setenv(ENV_DATABASE_URL, "postgresql+psycopg://u@h/db")
    settings = load_settings(path)
    assert ("postgresql+psycopg://u@h/db", True) == (
        settings.database_url,
        settings.database_configured,
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[database]\nuri = 'x'",
            "database.uri is not a known key; did you mean database.url? (known: url)",
        ),
        ("[celry]\nbroker_url = 'x'", "[celry] is not a notifier table; did you mean [celery]?"),
        ("[database]\nurl = 5", "database.url must be a non-empty string, got 5"),
        ("[celery]\nbroker_url = ''", "celery.broker_url must be a non-empty string, got ''"),
        ("[celery]\nflush_on_task_end = 'yes'", "celery.flush_on_task_end must be true or false"),
        ("celery = 1", "celery must be a table"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    """Each mistake in the app's tables is a ConfigError naming file and dotted key."""
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_shipped_config_loads() -> None:
    """The repository's config.toml is valid for the app as well as for the notifier."""
    root = Path(__file__).resolve().parents[2]
    settings = load_settings(root / "config.toml")
    assert settings.flush_on_task_end is True
