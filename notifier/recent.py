"""``Recent``: a dict that keeps only what was remembered last.

The notifier and its parts keep a few maps of "seen lately" (the tasks whose end was just
accepted, a workflow's running members, the event ids a reader already handed on, the refusals a
gateway already logged). Each must stay bounded whatever runs through it, and each forgets the
oldest first. A ``dict`` subclass, so that lookups, ``in`` and truthiness stay the dict's own, in C,
on the publish path.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(dict[K, V]):
    """The ``limit`` most recently remembered keys and their values, oldest forgotten first."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit

    def remember(self, key: K, value: V) -> None:
        """Set ``key`` to ``value`` as the newest entry; the oldest goes beyond ``limit``."""
        self.pop(key, None)
        self[key] = value
        if len(self) > self.limit:
            del self[next(iter(self))]
