"""Bad input, property-based: whatever callers pass, the notifier raises InvalidEvent or
ConfigError at the call site, or sends exactly the JSON it promised; its thread never dies.

Each property checks the library against an oracle written here from the rules of
docs/guarantees.md, not from the library's code, and runs against a real redis-server with a real
subscriber.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import threading
import tomllib
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import notifier as default
from notifier import ConfigError, InvalidEvent, Notifier, load_config
from notifier.config import TABLES
from notifier.events import ERROR_MAX_CHARS, TASK_ID_MAX
from notifier.testing import EventCollector, RedisServer, wait_until

from support.helpers import make_config

MAX_EVENT_BYTES = 65_536
# The rig's own channel prefix: its subscriber sees the rig's events and nobody else's.
CHANNEL_PREFIX = "prop:"
# Room the envelope takes around the data: event_id, type, task_id, timestamp and the keys.
ENVELOPE_SLACK = 400
PROPERTY = settings(
    max_examples=200,
    # CI (.ci/run sets NOTIFIER_CI) runs the same examples every time, so that a submission's
    # result does not depend on the draw; local runs draw afresh and keep finding new cases.
    derandomize=bool(os.environ.get("NOTIFIER_CI")),
    database=None,  # no example database to keep between runs (CI starts from a fresh clone)
    deadline=None,  # each example waits for a real subscriber
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Rig:
    """One notifier and one subscriber shared by every example of a property."""

    def __init__(self, notifier: Notifier, collector: EventCollector) -> None:
        self.notifier = notifier
        self.collector = collector
        self._ids = count()
        self.expected_messages = 0

    def task_id(self) -> str:
        return f"prop-{next(self._ids)}"

    def messages(self, task_id: str, count: int = 1, timeout: float = 10.0) -> list[bytes]:
        """The ``count`` messages published on ``task_id``'s channel since the last call; also
        checks that the subscriber got exactly what was accepted: nothing extra or partial."""
        start = self.expected_messages
        self.expected_messages += count
        channel = f"{CHANNEL_PREFIX}{task_id}"

        def mine() -> list[bytes]:
            n = len(self.collector.channels)  # appended after raw: raw[:n] is complete
            pairs = zip(self.collector.raw[start:n], self.collector.channels[start:n], strict=True)
            return [m for m, c in pairs if c == channel]

        wait_until(lambda: len(mine()) >= count, timeout)
        assert self.expected_messages == len(self.collector.raw)
        return mine()

    def assert_alive(self) -> None:
        """The notifier thread survived: a plain event still goes through."""
        assert self.notifier.stats()["thread_alive"]
        task_id = self.task_id()
        assert self.notifier.publish(task_id, "sentinel", {"ok": True})
        (message,) = self.messages(task_id)
        assert {"ok": True} == json.loads(message)["data"]


@pytest.fixture(scope="module")
def rig(redis_server: RedisServer) -> Iterator[Rig]:
    collector = EventCollector(redis_server.url, f"{CHANNEL_PREFIX}*").start()
    config = make_config(
        redis_server.url,
        redis={"channel_prefix": CHANNEL_PREFIX},
        queue={"max_event_bytes": MAX_EVENT_BYTES},
    )
    n = Notifier(config)
    default.configure(config)
    try:
        yield Rig(n, collector)
    finally:
        default.shutdown()
        n.close(timeout=2)
        collector.close()


# The oracle: what JSON a value must arrive as, or why it must be refused ----------------------


class Refused(Exception):
    """docs/guarantees.md says this value cannot be sent; ``reason`` is a pattern of the message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


NOT_JSON = "not JSON-serialisable"
NON_FINITE = "NaN or infinity"
TOO_BIG = "over queue.max_event_bytes"


def expected_json(value: Any) -> Any:
    """The JSON value ``value`` must arrive as (tuples become lists), or Refused."""
    flags: set[str] = set()
    result = _walk(value, flags, 0)
    if NOT_JSON in flags:
        raise Refused(NOT_JSON)  # the encoder stops at the first unrepresentable value
    if NON_FINITE in flags:
        raise Refused(NON_FINITE)
    return result


def _walk(value: Any, flags: set[str], depth: int) -> Any:
    if depth > 200:  # orjson refuses nesting past 254 levels; nothing here goes that deep
        flags.add(NOT_JSON)
    if type(value) in (list, tuple):
        return [_walk(v, flags, depth + 1) for v in value]
    if type(value) is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str or _has_surrogate(k):
                flags.add(NOT_JSON)
                k = repr(k)
            out[k] = _walk(v, flags, depth + 1)
        return out
    problem = _scalar_problem(value)
    if problem:
        flags.add(problem)
    return value


def _scalar_problem(value: Any) -> str | None:
    """Why a non-container value cannot be sent as is, if it cannot."""
    kind = type(value)
    if value is None or kind is bool:
        return None
    if kind is str:
        return NOT_JSON if _has_surrogate(value) else None
    if kind is int:  # "integers beyond 64 bits" are refused
        return None if -(2**63) <= value <= 2**64 - 1 else NOT_JSON
    if kind is float:
        return None if math.isfinite(value) else NON_FINITE
    return NOT_JSON  # bytes, sets, arbitrary objects


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def same_json(expected: Any, actual: Any) -> bool:
    """Equal as JSON values, strictly: 1, 1.0 and True differ, and so do 0.0 and -0.0."""
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float):
        return expected == actual and math.copysign(1, expected) == math.copysign(1, actual)
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(map(same_json, expected, actual))
    if isinstance(expected, dict):
        return expected.keys() == actual.keys() and all(
            same_json(v, actual[k]) for k, v in expected.items()
        )
    return bool(expected == actual)


# Strategies --------------------------------------------------------------------------------


class Opaque:
    """An object JSON has no form for."""

    def __repr__(self) -> str:
        return "Opaque()"


any_text = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
huge_text = st.builds(
    lambda c, n: c * n, st.sampled_from(["x", "é", "€", "😀", "\x00"]), st.integers(1, 40_000)
)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([2**64, -(2**63) - 1, 2**100, -(2**200)]),  # just past the 64-bit edges
    finite,
    st.floats(),  # NaN and infinities too
    any_text,
    huge_text,
    st.binary(max_size=8),
    st.sets(st.integers(), max_size=3),
    st.builds(Opaque),
)
keys = st.one_of(
    any_text,
    st.text(max_size=10),
    st.text(max_size=10),  # mostly plain str keys, so that most examples can be sent
    st.integers(),
    st.none(),
    st.booleans(),
    finite,
    st.tuples(st.integers()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)
event_data = st.dictionaries(keys, values, max_size=5)


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    inner = data
    for _ in range(depth):
        inner["d"] = {}
        inner = inner["d"]
    return data


@PROPERTY
@given(data=event_data)
@example(data={"deep": nested(100)})
@example(data={"deep": nested(300)})
@example(data={"big": "é" * 40_000})  # 80,000 bytes of UTF-8: over the limit
@example(data={"n": 2**64 - 1, "m": -(2**63), "z": -0.0, "e": 5e-324})
def test_publish_sends_the_exact_json_or_raises_invalid_event(
    rig: Rig, data: dict[Any, Any]
) -> None:
    """Every call returns True and the exact JSON arrives, or raises InvalidEvent saying why."""
    try:
        expected: Any = expected_json(data)
        reason = None
        size = len(json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode())
        if size > MAX_EVENT_BYTES:
            reason = TOO_BIG
        elif size + ENVELOPE_SLACK > MAX_EVENT_BYTES:
            reason = "either"  # the envelope decides; both outcomes are right
    except Refused as refused:
        expected, reason = None, refused.reason
    task_id = rig.task_id()
    try:
        accepted = rig.notifier.publish(task_id, "custom", data)
    except InvalidEvent as exc:
        assert reason is not None, f"refused what docs/guarantees.md allows: {exc}"
        if reason != "either":
            assert re.search(re.escape(reason), str(exc)), str(exc)
    else:
        assert accepted is True
        assert reason in (None, "either"), f"accepted what docs/guarantees.md refuses ({reason})"
        (message,) = rig.messages(task_id)
        assert same_json(expected, json.loads(message)["data"])
    rig.assert_alive()


# publish_failed: any object as the error ---------------------------------------------------


class StrRaises(Exception):
    def __init__(self, raised: Exception) -> None:
        super().__init__()
        self.raised = raised

    def __str__(self) -> str:
        raise self.raised


class ReprAndStrRaise:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise ValueError("no str")


class StrNotAString(Exception):
    def __str__(self) -> Any:
        return 42  # str() raises TypeError


class StrRecurses(Exception):
    def __str__(self) -> str:
        return str(self)  # RecursionError


class ArgReprRaises(KeyError):
    """KeyError's str() is the repr of its argument."""


error_values = st.one_of(
    st.builds(Exception, any_text | huge_text),
    st.builds(ValueError, any_text, st.integers()),
    st.builds(KeyError, any_text | st.builds(ReprAndStrRaise)),
    st.builds(ArgReprRaises, st.builds(ReprAndStrRaise)),
    st.builds(OSError, st.integers(), any_text),
    st.builds(UnicodeDecodeError, st.just("utf-8"), st.binary(), st.just(0), st.just(1), any_text),
    st.builds(
        StrRaises,
        st.sampled_from(
            [RuntimeError("x"), RecursionError(), UnicodeEncodeError("a", "b", 0, 1, "c")]
        ),
    ),
    st.builds(ReprAndStrRaise),
    st.builds(StrNotAString),
    st.builds(StrRecurses),
    st.builds(lambda: KeyboardInterrupt()),
    values,  # anything at all: None, numbers, text, bytes, sets, nested containers, objects
)


@PROPERTY
@given(error=error_values)
@example(error=Exception("\ud800" * 10_000))
@example(error=Exception(b"\xff\xfe not UTF-8"))
@example(error="")  # an empty text is still described: "<empty str>"
def test_publish_failed_never_raises_whatever_the_error(rig: Rig, error: Any) -> None:
    """publish_failed accepts any error value and delivers a failed event with a str error."""
    task_id = rig.task_id()
    assert rig.notifier.publish_failed(task_id, error) is True
    (message,) = rig.messages(task_id)
    event = json.loads(message)
    assert "failed" == event["type"]
    text = event["data"]["error"]
    assert isinstance(text, str) and 0 < len(text) <= ERROR_MAX_CHARS
    if isinstance(error, BaseException):
        assert type(error).__name__ == event["data"]["error_type"]
    rig.assert_alive()


class BrokenStr(str):
    """A str whose own methods fail: publish_failed must not call them."""

    def __len__(self) -> int:
        raise RuntimeError("no len")

    def isascii(self) -> bool:
        raise RuntimeError("no isascii")


def test_publish_failed_with_a_str_subclass_whose_methods_raise(rig: Rig) -> None:
    """A str subclass as the error is treated as its plain text."""
    task_id = rig.task_id()
    assert rig.notifier.publish_failed(task_id, BrokenStr("disk full"))
    (message,) = rig.messages(task_id)
    assert "disk full" == json.loads(message)["data"]["error"]


# Task ids: one documented rule, the same in every helper -----------------------------------


def task_id_allowed(task_id: str) -> bool:
    """docs/guarantees.md: 1 to 256 characters, no whitespace or control characters, no * ? [ ]."""
    return (
        1 <= len(task_id) <= TASK_ID_MAX
        and not _has_surrogate(task_id)
        and not any(c.isspace() or unicodedata.category(c) == "Cc" or c in "*?[]" for c in task_id)
    )


def helpers(n: Notifier) -> list[Callable[[str], bool]]:
    return [
        lambda t: n.publish(t, "custom", {}),
        lambda t: n.publish_progress(t, 1),
        lambda t: n.publish_completed(t),
        lambda t: n.publish_failed(t, "error"),
        lambda t: default.publish(t, "custom", {}),
        lambda t: default.publish_progress(t, 1),
        lambda t: default.publish_completed(t),
        lambda t: default.publish_failed(t, "error"),
    ]


task_ids = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.text(st.sampled_from("ab-:.é* ?[]\n\t\x00\x7f\u00a0\u2028"), min_size=1, max_size=6),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "😀", " "]), st.integers(250, 260)),
)


@PROPERTY
@given(task_id=task_ids)
@example(task_id="with space")
@example(task_id="star*")
@example(task_id="new\nline")
@example(task_id="x" * TASK_ID_MAX)
@example(task_id="x" * (TASK_ID_MAX + 1))
@example(task_id="задача-7")
def test_task_id_rule_is_the_same_for_every_helper(rig: Rig, task_id: str) -> None:
    """Each of the eight publish functions accepts exactly the ids docs/guarantees.md allows, and an
    accepted id names the channel as given; a refused one raises, but from publish_failed,
    which returns False."""
    allowed = task_id_allowed(task_id)
    outcomes = []
    for call in helpers(rig.notifier):
        try:
            outcomes.append(call(task_id))
        except InvalidEvent as exc:
            assert "task_id" in str(exc)
            outcomes.append(None)
    if allowed:
        assert [True] * 8 == outcomes
        messages = rig.messages(task_id, 8)
        assert all(task_id == json.loads(m)["task_id"] for m in messages)
    else:
        assert [None, None, None, False] * 2 == outcomes
    rig.assert_alive()


@pytest.mark.parametrize("task_id", ["a\x80b", "a\x9bb", "a\x9fb"])
def test_task_ids_with_c1_control_characters_are_refused(rig: Rig, task_id: str) -> None:
    """U+009B (CSI) and the other C1 controls are control characters too."""
    with pytest.raises(InvalidEvent, match="task_id"):
        rig.notifier.publish(task_id, "custom", {})


# Configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """What docs/configuration.md and config.toml say a key accepts; ``partner`` is the key a
    cross-key rule may name instead (``batch_size`` against ``maxsize``, and so on)."""

    ok: Callable[[Any], bool]
    partner: str | None = None


def _number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _positive_int(v: Any) -> bool:
    return type(v) is int and v > 0


def _strings(v: Any, ok: Callable[[str], bool]) -> bool:
    return type(v) is list and all(type(s) is str and ok(s) for s in v)


def _origin(text: str) -> bool:
    return text == "*" or re.fullmatch(r"https?://[^/]+", text) is not None


def _network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_MAXSIZE, DEFAULT_MAX_BACKOFF, DEFAULT_INITIAL_BACKOFF = 10_000, 5.0, 0.05
DEFAULT_HEARTBEAT, DEFAULT_STALE_AFTER = 1.0, 2.0

KEYS: dict[str, Key] = {
    "redis.channel_prefix": Key(lambda v: type(v) is str),
    "redis.connect_timeout": Key(_positive),
    "redis.publish_timeout": Key(_positive),
    "redis.wait_for_replica": Key(lambda v: type(v) is bool),
    "redis.replica_timeout": Key(_positive),
    "queue.maxsize": Key(_positive_int),  # alone, the default batch shrinks to fit
    "queue.batch_size": Key(lambda v: _positive_int(v) and v <= DEFAULT_MAXSIZE, "queue.maxsize"),
    "queue.overflow": Key(lambda v: v in ("drop_newest", "drop_oldest")),
    "queue.max_event_bytes": Key(lambda v: type(v) is int and 4096 <= v <= 512 * 2**20),
    "queue.progress_interval": Key(lambda v: _number(v) and v >= 0),
    "queue.linger": Key(lambda v: _number(v) and 0 <= v <= 1),
    "reconnect.initial_backoff": Key(
        lambda v: _positive(v) and v <= DEFAULT_MAX_BACKOFF, "reconnect.max_backoff"
    ),
    "reconnect.max_backoff": Key(lambda v: _positive(v) and v >= DEFAULT_INITIAL_BACKOFF),
    "shutdown.drain_timeout": Key(lambda v: _number(v) and v >= 0),
    "logging.level": Key(lambda v: v in LEVELS),
    "health.enabled": Key(lambda v: type(v) is bool),
    "health.host": Key(lambda v: type(v) is str and bool(v.strip())),
    "health.port": Key(lambda v: type(v) is int and 0 <= v <= 65535),
    "health.heartbeat_interval": Key(
        lambda v: _positive(v) and v <= DEFAULT_STALE_AFTER, "health.stale_after"
    ),
    "health.stale_after": Key(lambda v: _positive(v) and v >= DEFAULT_HEARTBEAT),
    "health.max_loop_lag": Key(_positive),
    "health.state_dir": Key(lambda v: type(v) is str),  # "" means a temporary directory
    "history.enabled": Key(lambda v: type(v) is bool),
    "history.maxlen": Key(_positive_int),
    "history.ttl_seconds": Key(_positive_int),
    "history.key_prefix": Key(lambda v: type(v) is str and v != ""),
    "gateway.secret": Key(lambda v: type(v) is str and (v == "" or len(v) >= 32)),
    "gateway.allow_anonymous": Key(lambda v: type(v) is bool),
    "gateway.host": Key(lambda v: type(v) is str and bool(v.strip())),
    "gateway.port": Key(lambda v: type(v) is int and 0 <= v <= 65535),
    "gateway.max_connections": Key(_positive_int),
    "gateway.client_buffer": Key(_positive_int),
    "gateway.heartbeat_interval": Key(_positive),
    "gateway.retry_ms": Key(_positive_int),
    "gateway.history_connections": Key(_positive_int),
    "gateway.workers": Key(lambda v: type(v) is int and v >= 0),
    "gateway.allowed_origins": Key(lambda v: _strings(v, _origin)),
    "gateway.max_connections_per_client": Key(_positive_int),
    "gateway.trusted_proxies": Key(lambda v: _strings(v, _network)),
    "gateway.token_cookie": Key(
        lambda v: type(v) is str and re.fullmatch(r"[A-Za-z0-9._-]+", v) is not None
    ),
    "gateway.send_timeout": Key(_positive),
    "gateway.header_timeout": Key(_positive),
    "gateway.max_header_bytes": Key(lambda v: type(v) is int and 1024 <= v <= 1_048_576),
}


def test_the_key_table_covers_every_config_key() -> None:
    """A key added to the configuration gets its row above (redis.url has tests of its own)."""
    every = {f"{name}.{f.name}" for name, table in TABLES.items() for f in fields(table)}
    assert every - {"redis.url"} == set(KEYS)


def toml_value(value: Any) -> str:
    """``value`` written as TOML."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        if math.isnan(value):
            return "nan"
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
    if type(value) is str:  # a JSON string is a TOML basic string, once DEL is escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if type(value) is list:
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if type(value) is dict:
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-5, 70_000),
    st.floats(),
    st.floats(-10, 10),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(list(LEVELS) + ["drop_newest", "drop_oldest", "INFO", " ", ""]),
    st.sampled_from(["*", "https://app.example.com", "http://h:8", "https://a/", "10.0.0.0/8"]),
    st.sampled_from(["::1", "127.0.0.1", "10.0.0.300", "notifier_token", "a b", "tok\u00e9n"]),
)
toml_values = st.one_of(
    toml_scalars,
    st.lists(toml_scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), toml_scalars, max_size=2),
)


def notifier_threads() -> int:
    return sum(t.name == "notifier" for t in threading.enumerate())


@pytest.fixture
def no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFIER_CONFIG", raising=False)
    monkeypatch.delenv("NOTIFIER_REDIS_URL", raising=False)


@settings(PROPERTY, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dotted=st.sampled_from(sorted(KEYS)), value=toml_values)
def test_each_key_accepts_what_the_docs_say_and_names_itself_otherwise(
    tmp_path: Path, no_config_env: None, dotted: str, value: Any
) -> None:
    """Any TOML value for any key: loaded as given, or ConfigError naming the file and key."""
    table, key = dotted.split(".")
    path = tmp_path / "config.toml"
    path.write_text(f"[{table}]\n{key} = {toml_value(value)}\n", encoding="utf-8")
    parsed = tomllib.loads(path.read_text(encoding="utf-8"))[table][key]
    assert repr(value) == repr(parsed)  # the TOML writer above is right (repr: nan == nan)
    spec, threads = KEYS[dotted], notifier_threads()
    if spec.ok(value):
        loaded = getattr(getattr(load_config(path), table), key)
        # An integer given for seconds is loaded as the nearest float (2**53 + 1 -> 2**53).
        expected = float(value) if type(loaded) is float and type(value) is int else value
        if type(value) is list:  # a list is kept as a tuple, so that the config stays frozen
            expected, value = tuple(value), tuple(value)
        assert expected == loaded and type(loaded) in (type(value), float)
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert str(path) == error.path
    assert str(error).startswith(f"{path}: ")
    assert error.key in (dotted, spec.partner), str(error)
    assert dotted in str(error)
    assert threads == notifier_threads()  # raised before anything started


@settings(PROPERTY, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    table=st.sampled_from(["redis", "queue", "reconnect", "shutdown", "logging"]),
    key=st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True),
)
def test_unknown_keys_are_named(tmp_path: Path, no_config_env: None, table: str, key: str) -> None:
    """A key the table does not have is a ConfigError naming it, with the known keys listed."""
    assume(f"{table}.{key}" not in KEYS and f"{table}.{key}" != "redis.url")
    path = tmp_path / "config.toml"
    path.write_text(f"[{table}]\n{key} = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{table}.{key} is not a known key")) as caught:
        load_config(path)
    assert f"{table}.{key}" == caught.value.key


@settings(PROPERTY, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(max_size=80)
    | st.builds(
        "\n".join,
        st.lists(
            st.sampled_from(
                [
                    "[queue]",
                    "[redis",
                    "maxsize = 5",
                    "maxsize =",
                    "url = 'x'",
                    "= 1",
                    "[[queue]]",
                    "a.b = 1",
                ]
            ),
            max_size=4,
        ),
    )
)
def test_any_file_content_loads_or_names_the_file(
    tmp_path: Path, no_config_env: None, text: str
) -> None:
    """Whatever a config file holds: a config, or a ConfigError that starts with its name."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        with pytest.raises(ConfigError, match="invalid TOML") as caught:
            load_config(path)
        assert str(caught.value).startswith(f"{path}: invalid TOML: ")
        return
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: ")


SECRET = "pw-Zq8"
url_parts = st.tuples(
    st.sampled_from(["redis", "rediss", "unix", "http", "REDIS", ""]),
    st.sampled_from(["://", "://", "://", ":/", "//"]),  # and two typos of the separator
    st.sampled_from(["", "user@", f":{SECRET}@", f"user:{SECRET}@"]),
    st.sampled_from(["127.0.0.1", "localhost", "", "[::1]", "[::1", "[zz]", "h_st", "exa mple"]),
    st.sampled_from(["", ":6379", ":0", ":65535", ":65536", ":x", ":"]),
    st.sampled_from(["", "/", "/0", "/15", "/x", "/-1"]),
    st.sampled_from(
        ["", "?db=2", "?socket_timeout=1.5", "?protocol=2", f"?password={SECRET}"]
        + ["?socket_timeout=oops", "?foo=bar", "?ssl_cert_reqs=none"]
    ),
)


@settings(PROPERTY, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=url_parts)
def test_a_redis_url_is_usable_or_a_config_error_without_its_password(
    tmp_path: Path, no_config_env: None, parts: tuple[str, ...]
) -> None:
    """load_config accepts a URL only if redis-py can make a connection from it; otherwise it
    raises ConfigError naming redis.url, with the password redacted."""
    scheme, separator, userinfo, host, port, path_part, query = parts
    url = f"{scheme}{separator}{userinfo}{host}{port}{path_part}{query}"
    path = tmp_path / "config.toml"
    path.write_text(f"[redis]\nurl = {json.dumps(url)}\n")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert "redis.url" == exc.key
        assert str(exc).startswith(f"{path}: redis.url must be")
        assert SECRET not in str(exc)
        return
    # Accepted: the notifier thread will build its connection from it, so that must work.
    redis.asyncio.ConnectionPool.from_url(config.redis.url).make_connection()


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@[::1/0",  # urlsplit itself rejects these two
        "redis://[zz]:6379/0",
        f"redis:/:{SECRET}@127.0.0.1/0",  # typos that leave urlsplit no netloc
        f"redis//:{SECRET}@127.0.0.1/0",
        f"://:{SECRET}@127.0.0.1/0",
    ],
)
def test_malformed_or_mistyped_url_is_a_config_error_without_its_password(
    tmp_path: Path, no_config_env: None, url: str
) -> None:
    """A URL urlsplit rejects, or a mistyped one, is a ConfigError naming redis.url, and does
    not show the password it carries."""
    path = tmp_path / "config.toml"
    path.write_text(f"[redis]\nurl = {json.dumps(url)}\n")
    with pytest.raises(ConfigError, match="redis.url must be") as caught:
        load_config(path)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["{url}?socket_timeout=oops", "{url}?foo=bar", "{url}?ssl_cert_reqs=none"]
)
def test_url_query_load_config_accepts_never_kills_the_notifier(
    redis_server: RedisServer,
    collector: EventCollector,
    notifier_factory: Callable[..., Notifier],
    tmp_path: Path,
    no_config_env: None,
    url: str,
) -> None:
    """A redis.url that passes load_config either delivers or was a ConfigError already."""
    url = url.format(url=redis_server.url)
    path = tmp_path / "config.toml"
    path.write_text(f"[redis]\nurl = {json.dumps(url)}\n")
    try:
        config = load_config(path)
    except ConfigError:
        return  # refused up front: fine
    n = notifier_factory(config.redis.url)
    assert n.publish("url-query", "custom", {"url": url})
    wait_until(lambda: n.stats()["published"] or not n.stats()["thread_alive"], 5)
    assert n.stats()["thread_alive"]
    assert 1 == n.stats()["published"]
    collector.wait_for(1)
