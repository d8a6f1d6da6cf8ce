"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from notifier import NotifierConfig
from notifier.config import ReconnectConfig, RedisConfig


def make_config(url: str, **tables: dict[str, Any]) -> NotifierConfig:
    """A config for ``url`` with quick reconnects, plus per-table overrides."""
    config = NotifierConfig(
        redis=RedisConfig(url=url, connect_timeout=1.0, publish_timeout=1.0),
        reconnect=ReconnectConfig(initial_backoff=0.01, max_backoff=0.2),
    )
    for name, values in tables.items():
        config = replace(config, **{name: replace(getattr(config, name), **values)})
    return config


def assert_invariant(stats: dict[str, Any]) -> None:
    """accepted == published + pending + drops after acceptance; refused calls are drops too."""
    after_acceptance = stats["dropped"] - stats["rejected"]
    assert stats["accepted"] == stats["published"] + stats["pending"] + after_acceptance, stats
    assert sum(stats["dropped_by_reason"].values()) == stats["dropped"], stats
