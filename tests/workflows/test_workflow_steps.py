"""The workflow script on a real redis-server, fed by a real notifier without Celery: steps that
reach Redis twice count once, a workflow completes only once sealed, the first failure ends it
and nothing follows its terminal event; and the gateway serves a workflow behind its own token.
The Celery side is tests/workflows/test_workflows.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from websockets.sync.client import connect

from notifier import Notifier, schema
from notifier.consumer import subscribe
from notifier.events import encode_event
from notifier.gateway import issue_token
from notifier.testing import RedisServer
from notifier.workflows.ids import channel_id
from notifier.workflows.steps import declaration, member_step

from support.gateway import GatewayProcess, decoded, get_json, sse_events
from support.helpers import new_task

pytestmark = pytest.mark.timeout(120)
HISTORY = {"enabled": True}
SCHEMA = Draft202012Validator(json.loads(schema.path("workflow-event").read_text("utf-8")))


@pytest.fixture
def n(redis_server: RedisServer, notifier_factory: Callable[..., Notifier]) -> Notifier:
    return notifier_factory(redis_server.url, history=HISTORY)


def member(workflow: str, task_id: str, event_type: str, **data: Any) -> Any:
    payload = encode_event(task_id, event_type, data, 1 << 20)
    return member_step(workflow, task_id, event_type, payload, data.get("progress"))


def history(n: Notifier, redis: RedisServer, workflow: str) -> list[dict[str, Any]]:
    key = n.config.history.key_prefix + channel_id(workflow)
    with redis.client() as r:
        events = [orjson.loads(fields[b"event"]) for _, fields in r.xrange(key)]
    for event in events:
        SCHEMA.validate(event)
    return events


def state(n: Notifier, redis: RedisServer, workflow: str) -> dict[str, str]:
    key = n.config.history.key_prefix + channel_id(workflow) + ":state"
    with redis.client() as r:
        return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


def counts(event: dict[str, Any]) -> tuple[int, int, int, int]:
    data = event["data"]
    return data["total"], data["completed"], data["failed"], data["running"]


def test_a_step_that_reaches_redis_twice_counts_once(
    n: Notifier, redis_server: RedisServer
) -> None:
    workflow, a, b = new_task("wf"), new_task("a"), new_task("b")
    declared = [
        declaration(workflow, branch=a, size=1),
        declaration(workflow, branch=b, size=1),
        declaration(workflow, seal=2),
    ]
    started = member(workflow, a, "started", task="t", retries=0)
    completed = member(workflow, a, "completed", result=1)
    # every step twice, as a resend after a broken connection does
    for step in [*declared, started, started, completed, completed, *declared]:
        assert n.integration.publish_step(step)
    assert n.flush(10)
    got = state(n, redis_server, workflow)
    assert (got["expected"], got["branches"], got["completed"], got["running"]) == (
        "2", "2", "1", "0",
    )  # fmt: skip
    events = history(n, redis_server, workflow)
    assert all(e["type"] == "member" for e in events)  # b never ended: no terminal event
    # a running member's event again (at least once: with the same event id), not an ended one's
    assert [e["data"]["event"]["type"] for e in events] == ["started", "started", "completed"]
    assert events[0]["event_id"] == events[1]["event_id"]
    assert counts(events[1]) == (2, 0, 0, 1)
    assert counts(events[2]) == (2, 1, 0, 0)


def test_a_workflow_whose_members_end_before_it_is_sealed_completes_at_the_seal(
    n: Notifier, redis_server: RedisServer
) -> None:
    workflow, tasks = new_task("wf"), [new_task(f"m{i}") for i in range(3)]
    for task in tasks:
        assert n.integration.publish_step(declaration(workflow, branch=task, size=1))
        assert n.integration.publish_step(member(workflow, task, "started", task="t", retries=0))
        assert n.integration.publish_step(
            member(workflow, task, "progress", progress=40, message=None)
        )
        assert n.integration.publish_step(member(workflow, task, "completed", result=None))
    assert n.flush(10)
    assert [e["type"] for e in history(n, redis_server, workflow)] == ["member"] * 9
    assert n.integration.publish_step(declaration(workflow, seal=3))
    assert n.flush(10)
    events = history(n, redis_server, workflow)
    assert events[-1]["type"] == "completed" and counts(events[-1]) == (3, 3, 0, 0)
    assert events[-1]["data"]["progress"] == 100
    assert [e["data"]["progress"] for e in events[:3]] == [0, 40, 100]  # one member of one


def test_the_first_failure_ends_the_workflow_and_nothing_follows(
    n: Notifier, redis_server: RedisServer
) -> None:
    workflow, tasks = new_task("wf"), [new_task(f"m{i}") for i in range(3)]
    assert n.integration.publish_step(declaration(workflow, branch=tasks[0], size=3, seal=1))
    for task in tasks:
        assert n.integration.publish_step(member(workflow, task, "started", task="t", retries=0))
    assert n.integration.publish_step(
        member(workflow, tasks[1], "failed", error="ValueError: bad row")
    )
    assert n.integration.publish_step(member(workflow, tasks[2], "revoked", terminated=True))
    assert n.integration.publish_step(member(workflow, tasks[0], "completed", result=None))
    assert n.flush(10)
    events = history(n, redis_server, workflow)
    assert [e["type"] for e in events] == ["member"] * 4 + ["failed"]
    end = events[-1]["data"]
    assert (end["member"], end["error"]) == (tasks[1], "ValueError: bad row")
    assert counts(events[-1]) == (3, 0, 1, 2)
    got = state(n, redis_server, workflow)  # the state still follows the members
    assert (got["completed"], got["failed"], got["running"]) == ("1", "2", "0")


def test_subscribe_to_a_workflow_ends_at_its_terminal_event(
    n: Notifier, redis_server: RedisServer
) -> None:
    workflow, task = new_task("wf"), new_task("only")
    for step in (
        declaration(workflow, branch=task, size=1, seal=1),
        member(workflow, task, "started", task="t", retries=0),
        member(workflow, task, "completed", result=[1]),
    ):
        assert n.integration.publish_step(step)
    assert n.flush(10)

    async def collect() -> list[dict[str, Any]]:
        async with asyncio.timeout(30):
            return [e async for e in subscribe(workflow, config=n.config, workflow=True)]

    assert [e["type"] for e in asyncio.run(collect())] == ["member", "member", "completed"]


@pytest.fixture
def gateway(redis_server: RedisServer, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(redis_server.url, tmp_path) as server:
        yield server
    server.assert_clean_log()


def test_the_gateway_serves_a_workflow_behind_a_token_for_its_id(
    gateway: GatewayProcess, redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    n = notifier_factory(redis_server.url, history=HISTORY)
    workflow, task = new_task("wf"), new_task("only")
    for step in (
        declaration(workflow, branch=task, size=1, seal=1),
        member(workflow, task, "started", task="t", retries=0),
        member(workflow, task, "completed", result=None),
    ):
        assert n.integration.publish_step(step)
    assert n.flush(10)
    token = issue_token(workflow, config=gateway.config, workflow=True)
    status, events = sse_events(gateway.url(f"/workflows/{workflow}/events?token={token}"))
    assert status == 200
    assert [e["type"] for e in decoded(events)] == ["member", "member", "completed"]
    status, last = get_json(gateway.url(f"/workflows/{workflow}/last?token={token}"))
    assert (status, last) == (200, decoded(events)[-1])
    with connect(gateway.url(f"/ws/workflows/{workflow}?token={token}", "ws")) as socket:
        frames = [json.loads(frame) for frame in socket]  # until the gateway closes it
    assert frames == decoded(events)
    # a token for the task id of the same name, or a workflow's token on a task route: refused
    task_token = issue_token(workflow, config=gateway.config)
    assert get_json(gateway.url(f"/workflows/{workflow}/last?token={task_token}"))[0] == 403
    assert get_json(gateway.url(f"/tasks/{workflow}/last?token={token}"))[0] == 403


def test_a_node_that_lost_the_script_gets_it_again_and_no_step_is_lost(
    n: Notifier, redis_server: RedisServer
) -> None:
    """Steps go by EVALSHA; after SCRIPT FLUSH (a restart, a failover) the node answers
    NOSCRIPT, and the step is sent again with the script: nothing dropped, nothing logged."""
    workflow, tasks = new_task("wf"), [new_task(f"m{i}") for i in range(4)]
    assert n.integration.publish_step(declaration(workflow, branch=tasks[0], size=4, seal=1))
    assert n.flush(10)
    for task in tasks:
        with redis_server.client() as r:
            r.script_flush()
        assert n.integration.publish_step(member(workflow, task, "completed", result=None))
        assert n.flush(10)
    stats = n.stats()
    assert stats["dropped"] == 0 and stats["published"] == stats["accepted"] == 5, stats
    assert stats["resent"] >= 4  # each flushed step once more
    events = history(n, redis_server, workflow)
    assert [e["type"] for e in events] == ["member"] * 4 + ["completed"]


def test_a_member_in_a_tight_progress_loop_costs_its_workflow_a_step_per_interval(
    redis_server: RedisServer, notifier_factory: Callable[..., Notifier]
) -> None:
    """A member's progress reaches its workflow coalesced as its own channel gets it (one per
    progress_interval, the latest value), and its end sends the last value first."""
    n = notifier_factory(
        redis_server.url, history={"enabled": True, "maxlen": 100_000},
        queue={"progress_interval": 0.2},
    )  # fmt: skip
    workflow, task = new_task("wf"), new_task("loop")
    assert n.integration.publish_step(declaration(workflow, branch=task, size=2, seal=1))
    n.integration.join_workflow(task, workflow)
    calls = 20_000
    for i in range(1, calls + 1):
        assert n.publish_progress(task, i * 50 / calls, message=None)
    assert n.publish_failed(task, RuntimeError("disk full"))
    n.integration.leave_workflow(task)
    assert n.flush(30)
    events = history(n, redis_server, workflow)
    progress = [
        e for e in events if e["type"] == "member" and e["data"]["event"]["type"] == "progress"
    ]
    with redis_server.client() as r:
        own = r.xlen(n.config.history.key_prefix + task) - 1  # its own progress events
    assert 1 <= len(progress) == own < calls / 100, (len(progress), own)
    assert progress[-1]["data"]["event"]["data"]["progress"] == 50  # the last value
    assert events[-1]["type"] == "failed" and events[-2]["data"]["event"]["type"] == "failed"
    assert events[-1]["data"]["progress"] == 25  # the mean of 50 and a member not started
    stats = n.stats()
    assert stats["published"] + stats["coalesced"] == stats["accepted"], stats


def test_a_workflow_id_that_names_no_channel_is_refused_when_a_task_joins(n: Notifier) -> None:
    """join_workflow checks both ids at the call, so that the notifier thread, which makes the
    member's steps, never meets one it cannot encode."""
    from notifier.exceptions import InvalidEvent

    for bad in ("two words", "x" * 300, "\ud800", "glob*"):
        with pytest.raises(InvalidEvent):
            n.integration.join_workflow("a-task", bad)
    with pytest.raises(InvalidEvent):
        n.integration.join_workflow("a task", "wf")
    n.integration.join_workflow("a-task", "wf")  # and a good pair joins
    assert n.publish_progress("a-task", 10)
    assert n.flush(10)
    assert n.stats()["published"] == 1  # the member's event; its step goes with it, uncounted
