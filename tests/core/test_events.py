"""Bad events are rejected at the call site; publish_failed never raises, whatever it is given."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from notifier import InvalidEvent, Notifier, NotifierError, default, events
from notifier.events import ERROR_MAX_CHARS, TASK_ID_MAX
from notifier.testing import EventCollector, RedisServer

from support.helpers import assert_invariant


@pytest.fixture
def notifier(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url, queue={"max_event_bytes": 4096})


class Broken(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class NotAnException:
    def __repr__(self) -> str:
        raise RuntimeError("so is __repr__")

    def __str__(self) -> str:
        raise KeyError("and __str__")


BAD_TASK_IDS: list[Any] = [
    "",
    None,
    123,
    b"bytes",
    "a b",
    "tab\there",
    "new\nline",
    "star*",
    "q?",
    "[x]",
    "x" * (TASK_ID_MAX + 1),
    "nul\x00",
    "del\x7f",
    "lone\ud800surrogate",
]


@pytest.mark.parametrize("task_id", BAD_TASK_IDS)
def test_bad_task_id_raises_invalid_event(notifier: Notifier, task_id: Any) -> None:
    """A task id outside the documented rule raises InvalidEvent from every publish helper but
    publish_failed, which returns False and counts an 'invalid' drop instead."""
    for call in (
        lambda: notifier.publish(task_id, "custom", {}),
        lambda: notifier.publish_progress(task_id, 1),
        lambda: notifier.publish_completed(task_id),
    ):
        with pytest.raises(InvalidEvent, match="task_id"):
            call()
    assert 0 == notifier.stats()["accepted"] + notifier.stats()["dropped"]
    assert notifier.publish_failed(task_id, "error") is False
    stats = notifier.stats()
    assert (0, 1, {"invalid": 1}) == (
        stats["accepted"],
        stats["rejected"],
        stats["dropped_by_reason"],
    )
    assert_invariant(stats)


@pytest.mark.parametrize("task_id", ["x" * TASK_ID_MAX, "задача-7", "a:b/c.d@e#1", "ü" * 10])
def test_good_task_ids_arrive_unchanged(
    notifier: Notifier, collector: EventCollector, task_id: str
) -> None:
    """Long and non-ASCII ids within the rule are accepted and name the channel as given."""
    assert notifier.publish_progress(task_id, 5)
    collector.wait_for(1)
    assert [f"task:{task_id}"] == collector.channels
    assert task_id == collector.events[0]["task_id"]


@pytest.mark.parametrize("event_type", ["", "has space", "x" * 65, None, 5, "ünï"])
def test_bad_event_type(notifier: Notifier, event_type: Any) -> None:
    """Event types are short ASCII words."""
    with pytest.raises(InvalidEvent, match="event type"):
        notifier.publish("t", event_type, {})


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Colour(enum.Enum):
    RED = "red"


BAD_DATA: list[tuple[Any, str]] = [
    ({"x": object()}, "not JSON-serialisable"),
    ({"x": {1, 2}}, "not JSON-serialisable"),
    ({"x": b"bytes"}, "not JSON-serialisable"),
    ({1: "non-str key"}, "not JSON-serialisable"),
    ({"x": "lone \ud800"}, "not JSON-serialisable"),
    ({"x": math.nan}, "NaN or infinity"),
    ({"x": [1, {"y": -math.inf}]}, "NaN or infinity"),
    ({"x": Point(1.0, math.nan)}, "NaN or infinity"),
    ({"x": 2**64}, "not JSON-serialisable"),
    ({"x": "y" * 5000}, "over queue.max_event_bytes"),
    ([1, 2], "must be a mapping"),
    ("text", "must be a mapping"),
]


@pytest.mark.parametrize(("data", "message"), BAD_DATA)
def test_bad_data_raises_at_the_call_site(notifier: Notifier, data: Any, message: str) -> None:
    """Unencodable or oversized data raises InvalidEvent (a ValueError) and queues nothing."""
    with pytest.raises(InvalidEvent, match=message) as caught:
        notifier.publish("t", "custom", data)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, NotifierError)
    assert 0 == notifier.stats()["accepted"]


def test_rich_values_encode_to_their_json_forms(
    notifier: Notifier, collector: EventCollector
) -> None:
    """datetime, UUID, enum, dataclass and tuples are accepted with standard JSON forms."""
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ident = uuid.UUID(int=7)
    assert notifier.publish(
        "t", "custom", {"when": when, "id": ident, "c": Colour.RED, "p": Point(1, 2), "t": (1, 2)}
    )
    (event,) = collector.wait_for(1)
    assert {
        "when": "2026-01-02T03:04:05Z",
        "id": str(ident),
        "c": "red",
        "p": {"x": 1, "y": 2},
        "t": [1, 2],
    } == event["data"]


def test_null_and_finite_floats_are_fine(notifier: Notifier, collector: EventCollector) -> None:
    """None and ordinary floats pass the NaN check untouched."""
    assert notifier.publish("t", "custom", {"a": None, "b": 1e308, "c": -0.0})
    (event,) = collector.wait_for(1)
    assert {"a": None, "b": 1e308, "c": -0.0} == event["data"]


ERRORS: list[Any] = [
    ValueError("plain"),
    Broken(),
    NotAnException(),
    None,
    42,
    {"dict": "error"},
    "a string error",
    "lone \ud800 surrogate",
    ValueError("x" * 100_000),
    KeyError("k"),
    Exception(),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_publish_failed_never_raises_for_any_error(
    notifier: Notifier, collector: EventCollector, error: Any
) -> None:
    """Any error value yields a delivered failed event with a string error text that fits."""
    try:
        raise RuntimeError("the task's own failure")
    except RuntimeError:
        assert notifier.publish_failed("t", error) is True
    (event,) = collector.wait_for(1)
    assert "failed" == event["type"]
    assert isinstance(event["data"]["error"], str)
    assert len(collector.raw[0]) <= 4096
    if isinstance(error, BaseException):
        assert type(error).__name__ == event["data"]["error_type"]
        assert event["data"]["error"].startswith(type(error).__name__)
    else:
        assert "error_type" not in event["data"]


def test_error_text_formats() -> None:
    """Exceptions become 'Type: message'; long text is cut with a marker saying how long it was."""
    from notifier.events import describe_error

    assert ("ValueError: bad", "ValueError") == describe_error(ValueError("bad"))
    assert ("KeyError", "KeyError") == describe_error(KeyError())
    assert ("just text", None) == describe_error("just text")
    text, _ = describe_error(Broken())
    assert "Broken: <unprintable Broken: str() raised RuntimeError>" == text
    long_text, _ = describe_error("y" * 10_000)
    assert ERROR_MAX_CHARS == len(long_text)
    assert long_text.endswith("[truncated, 10000 chars in all]")


def test_publish_failed_extras_and_oversize_fallback(
    notifier: Notifier, collector: EventCollector
) -> None:
    """Extra fields travel in data; an error too big for max_event_bytes is cut to fit."""
    assert notifier.publish_failed("t", "é" * 3000, step="load")
    (event,) = collector.wait_for(1)
    assert "load" == event["data"]["step"]
    assert event["data"]["error"].endswith("[truncated to fit queue.max_event_bytes]")
    assert len(collector.raw[0]) <= 4096
    json.loads(collector.raw[0].decode("utf-8"))


@pytest.mark.parametrize("counter", [0xE, 0xFE, 0xFFE])
def test_an_error_cut_to_fit_fits_when_the_event_id_gains_a_digit(
    monkeypatch: pytest.MonkeyPatch, counter: int
) -> None:
    """The fit is measured on one event and sent as another: when the id's counter crosses a
    power of 16 in between, the sent one is a byte longer, and must fit all the same (it
    raised, and publish_failed counted the failure as an invalid drop)."""
    monkeypatch.setattr(events, "_id_counter", itertools.count(counter))
    payload = events.encode_failure("t", "x" * 10_000, {}, 4096)
    assert len(payload) <= 4096
    assert json.loads(payload)["data"]["error"].endswith("[truncated to fit queue.max_event_bytes]")


def test_extras_must_not_override_reserved_fields(notifier: Notifier) -> None:
    """publish_failed(error_type=...) is refused, not a silent overwrite: False, an 'invalid'
    drop, and notification_invalid naming the reason."""
    with capture_logs() as logs:
        assert notifier.publish_failed("t", "e", error_type="x") is False
    assert {"invalid": 1} == notifier.stats()["dropped_by_reason"]
    (logged,) = [e for e in logs if e["event"] == "notification_invalid"]
    assert "error" == logged["log_level"]
    assert "error_type" in logged["reason"]


@pytest.mark.parametrize(
    ("task_id", "extra", "reason"),
    [
        ("my job", {}, "task_id must not contain whitespace"),
        (None, {}, "task_id must be a str"),
        ("", {}, "task_id must be 1 to 256 characters"),
        ("t", {"rows": {1, 2}}, "not JSON-serialisable"),
        ("t", {"blob": b"\x00"}, "not JSON-serialisable"),
        ("t", {"ratio": float("nan")}, "NaN or infinity"),
        ("t", {"big": "x" * 70_000}, "over queue.max_event_bytes"),
    ],
)
def test_publish_failed_never_raises_whatever_its_arguments(
    notifier: Notifier, task_id: Any, extra: dict[str, Any], reason: str
) -> None:
    """Inside an except block, a malformed task id or unencodable extras never replace the
    task's own error: False, counted as 'invalid', logged with the reason."""
    with capture_logs() as logs:
        try:
            raise ConnectionError("the real error")
        except ConnectionError as exc:
            assert notifier.publish_failed(task_id, exc, **extra) is False
    stats = notifier.stats()
    assert {"invalid": 1} == stats["dropped_by_reason"]
    assert_invariant(stats)
    (logged,) = [e for e in logs if e["event"] == "notification_invalid"]
    assert reason in logged["reason"]


def test_notification_invalid_is_logged_once_per_interval(notifier: Notifier) -> None:
    """A thousand invalid failure reports: a thousand drops counted, one log line."""
    with capture_logs() as logs:
        for _ in range(1000):
            assert notifier.publish_failed("bad id", "e") is False
    assert {"invalid": 1000} == notifier.stats()["dropped_by_reason"]
    assert 1 == sum(e["event"] == "notification_invalid" for e in logs)


def test_the_default_publish_failed_never_raises_even_for_a_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process-wide publish_failed, first called with a broken config file: False and a
    notifier_unavailable error line, not a ConfigError in the caller's except block."""
    bad = tmp_path / "config.toml"
    bad.write_text("[queue]\nmaxsize = -1\n")
    monkeypatch.setenv("NOTIFIER_CONFIG", str(bad))
    default.shutdown()
    monkeypatch.setattr(default, "_config", None)
    with capture_logs() as logs:
        assert default.publish_failed("t", RuntimeError("x")) is False
    (logged,) = [e for e in logs if e["event"] == "notifier_unavailable"]
    assert "queue.maxsize" in logged["error"]


@pytest.mark.parametrize("progress", ["50%", None, True, math.nan, math.inf])
def test_bad_progress(notifier: Notifier, progress: Any) -> None:
    """Progress is a finite number."""
    with pytest.raises(InvalidEvent):
        notifier.publish_progress("t", progress)
