"""``Recent``, the bounded map of what was seen last: no Redis, milliseconds."""

from __future__ import annotations

import pytest

from notifier.recent import Recent


def test_it_keeps_the_limit_most_recently_remembered_keys() -> None:
    """Past its limit, the key remembered longest ago goes first."""
    recent: Recent[str, int] = Recent(3)
    for i, key in enumerate("abcde"):
        recent.remember(key, i)
    assert {"c": 2, "d": 3, "e": 4} == dict(recent)


def test_remembering_a_key_again_makes_it_the_newest() -> None:
    """A key remembered again moves to the end: it outlives keys set after its first time."""
    recent: Recent[str, int] = Recent(3)
    for key in "abc":
        recent.remember(key, 0)
    recent.remember("a", 1)
    recent.remember("d", 2)
    assert ["c", "a", "d"] == list(recent)
    assert 1 == recent["a"]


def test_it_is_a_dict_to_read() -> None:
    """Lookups, ``in``, ``get`` and truthiness are the dict's own."""
    recent: Recent[str, str] = Recent(2)
    assert not recent
    recent.remember("task", "workflow")
    assert recent and "task" in recent and "workflow" == recent.get("task")
    assert recent.get("other") is None


def test_a_limit_below_one_is_refused() -> None:
    """A map that could hold nothing is a mistake, said at once."""
    with pytest.raises(ValueError, match="at least 1"):
        Recent(0)
