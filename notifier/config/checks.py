"""What a configuration key may hold, and the ``Table`` base that checks every key of a table.

Each dataclass field of a table carries its ``Check`` (``setting(default, check)``); building a
table runs them all, then the table's own cross-key rules, and raises ``ConfigError`` naming the
dotted key. A field marked secret is never echoed in an error: its length is shown instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from notifier.config import urls
from notifier.config.redaction import redact_url
from notifier.exceptions import ConfigError


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
            value = as_float(value)
        return isinstance(value, self.kind) and self.ok(value)


def as_float(value: int) -> float | int:
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


def list_of(expected: str, ok: Callable[[str], bool]) -> Check:
    """A TOML array of strings, each passing ``ok``; the table keeps it as a tuple."""
    return Check(
        object,
        f"a list of {expected}",
        lambda v: isinstance(v, list | tuple) and all(isinstance(s, str) and ok(s) for s in v),
    )


def is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def is_origin(text: str) -> bool:
    """``*``, or ``scheme://host[:port]`` with nothing after it (what a browser's Origin holds)."""
    if text == "*":
        return True
    scheme, sep, rest = text.partition("://")
    return scheme in ("http", "https") and bool(sep) and bool(rest) and "/" not in rest


PORT = Check(int, "a port number from 0 (any free port) to 65535", lambda v: 0 <= v <= 65535)
HOST = Check(str, "a host name or address", lambda v: bool(v.strip()))


def one_of(*choices: str) -> Check:
    return Check(str, "one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def setting(default: Any, check: Check, *, secret: bool = False) -> Any:
    """A dataclass field that carries the check its value must pass; a ``secret`` one is never
    shown in an error or a repr."""
    return field(default=default, metadata={"check": check, "secret": secret}, repr=not secret)


REDIS_URL = Check(
    str,
    "a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL (with options "
    "redis-py accepts)",
    lambda v: urls.problem(v) is None,
)


class Table:
    """Validation shared by every table: each field's check, then the table's own rules."""

    TABLE: ClassVar[str]

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check: Check = f.metadata["check"]
            value = getattr(self, f.name)
            if not check.accepts(value):
                what = f"must be {check.expected}"
                if f.metadata["secret"]:
                    shown = f"a value of {len(value)} characters" if isinstance(value, str) else "?"
                elif check is REDIS_URL and isinstance(value, str):
                    shown, what = repr(redact_url(value)), urls.problem(value) or what
                else:
                    shown = repr(value)
                raise ConfigError(
                    f"{self.TABLE}.{f.name} {what}, got {shown}", key=f"{self.TABLE}.{f.name}"
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


def did_you_mean(name: str, choices: Collection[str], shown: str = "{}") -> str:
    """``"; did you mean <nearest>?"`` when one of ``choices`` is close to ``name``, else ``""``.

    ``shown`` formats the suggestion, e.g. ``"[{}]"`` for a table or ``"queue.{}"`` for a key.
    """
    nearest = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {shown.format(nearest[0])}?" if nearest else ""
