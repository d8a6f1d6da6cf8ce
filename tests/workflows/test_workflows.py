"""Workflow channels on a real prefork worker: a chain, a group with a member SIGKILLed, a chord
whose callback runs, a group inside a chain. The canvases are applied by another process, as a
web application would (tests/apps/workflow_app.py); each workflow ends with exactly one terminal
event, and its counts agree at every event with its members' own events, and at the end with
what Celery's result backend says."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult, GroupResult
from jsonschema import Draft202012Validator

from notifier import NotifierConfig, load_config, schema
from notifier.consumer import last_event, subscribe
from notifier.eventtypes import TERMINAL_TYPES
from notifier.testing import RedisServer, wait_until
from notifier.workflows.ids import channel_id

from support.celery import AppWorker

pytestmark = pytest.mark.timeout(240)
SCHEMA = Draft202012Validator(json.loads(schema.path("workflow-event").read_text("utf-8")))


class Workflows(AppWorker):
    def __init__(self, redis: RedisServer, tmp: Path) -> None:
        config = tmp / "workflows.toml"
        config.write_text(
            f'[redis]\nurl = "{redis.url}"\nconnect_timeout = 1.0\npublish_timeout = 1.0\n'
            "[history]\nenabled = true\nmaxlen = 10000\n"
        )
        super().__init__("apps.workflow_app", redis, config, {"NOTIFIER_REDIS_URL": redis.url})
        self.process.env["WORKFLOW_QUEUE"] = self.process.queue
        self.config: NotifierConfig = load_config(config)
        self.launched: set[str] = set()

    def launch(self, shape: str) -> str:
        """Apply the canvas from another process; its workflow id."""
        done = subprocess.run(
            [sys.executable, "-m", "apps.workflow_app", shape],
            env=self.process.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        # The notifier's own log lines share this stdout, and a log line written in parts may
        # have the WORKFLOW line inside it: found wherever it is, not by its place in a line.
        (workflow,) = re.findall(r"WORKFLOW (\S+)\n", done.stdout)
        self.launched.add(workflow)
        return workflow

    def until_end(self, workflow: str, timeout: float = 120) -> list[dict[str, Any]]:
        async def collect() -> list[dict[str, Any]]:
            async with asyncio.timeout(timeout):
                stream = subscribe(workflow, config=self.config, workflow=True)
                return [event async for event in stream]

        return asyncio.run(collect())

    def run(self, shape: str) -> tuple[str, list[dict[str, Any]], dict[str, set[str]]]:
        """Launch the canvas and follow its workflow to the end: its id, its events (their
        counts checked) and its members by what they did."""
        workflow = self.launch(shape)
        events = self.until_end(workflow)
        return workflow, events, check_counts(events)

    def state(self, workflow: str) -> dict[str, str]:
        key = self.config.history.key_prefix + channel_id(workflow) + ":state"
        with self.redis.client() as r:
            return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


@pytest.fixture(scope="module")
def workflows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workflows]:
    tmp = tmp_path_factory.mktemp("workflows")
    with RedisServer() as redis, Workflows(redis, tmp) as running:
        yield running


def check_counts(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each event's counts against the members' events before it, replayed: running, completed
    and failed members; exactly one terminal event, the last. The members, by what they did."""
    seen: dict[str, set[str]] = {"running": set(), "completed": set(), "failed": set()}
    for event in events:
        assert not SCHEMA.validate(event)
        if event["type"] == "member":
            member, kind = event["data"]["member"], event["data"]["event"]["type"]
            assert event["data"]["event"]["task_id"] == member
            if kind == "started" and member not in seen["completed"] | seen["failed"]:
                seen["running"].add(member)
            elif kind in ("completed", "failed", "revoked"):
                seen["running"].discard(member)
                seen["completed" if kind == "completed" else "failed"].add(member)
        data = event["data"]
        for count in ("running", "completed", "failed"):
            assert data[count] == len(seen[count]), (count, event)
        assert data["total"] >= data["running"] + data["completed"] + data["failed"]
    assert [e["type"] for e in events if e["type"] in TERMINAL_TYPES] == [events[-1]["type"]]
    return seen


def test_a_chain_of_three_ends_completed(workflows: Workflows) -> None:
    workflow, events, seen = workflows.run("chain")
    end = events[-1]
    assert end["type"] == "completed", events
    assert end["data"] | {"progress": 100} == {
        "total": 3, "completed": 3, "failed": 0, "running": 0, "progress": 100,
    }  # fmt: skip
    assert end["data"]["progress"] == 100
    assert AsyncResult(workflow, app=workflows.app).get(timeout=30) == 2  # the chain's first
    for member in seen["completed"]:
        assert AsyncResult(member, app=workflows.app).state == "SUCCESS"
    assert len(seen["completed"]) == 3


def test_a_group_of_fifty_with_one_member_killed_ends_failed(workflows: Workflows) -> None:
    workflow, events, _ = workflows.run("group")
    end = events[-1]
    assert end["type"] == "failed", events[-3:]
    # at once, even before the applying process has declared every member (total: so far)
    assert end["data"]["failed"] == 1 and end["data"]["total"] <= 50
    assert "WorkerLostError" in end["data"]["error"], end
    killed = end["data"]["member"]
    result = GroupResult.restore(workflow, app=workflows.app) or _group(workflows, workflow)
    # Celery's result backend, once every member is done, and the workflow's own state then
    wait_until(lambda: all(r.ready() for r in result.results), timeout=120)
    failed = [r.id for r in result.results if r.failed()]
    assert failed == [killed]
    state = wait_until(
        lambda: (s := workflows.state(workflow)) and int(s.get("completed", 0)) == 49 and s,
        timeout=60,
    )
    assert int(state["failed"]) == 1 and int(state["running"]) == 0
    assert (state["expected"], state["sealed"]) == ("50", "50")
    assert sum(1 for r in result.results if r.successful()) == int(state["completed"])


def test_a_chain_whose_step_hits_the_hard_time_limit_ends_failed_there(
    workflows: Workflows,
) -> None:
    """The main process ends the stuck step (TimeLimitExceeded); the step after it never runs,
    and the workflow fails at once, with two of its three members known to have ended."""
    workflow, events, _ = workflows.run("stuck")
    end = events[-1]
    assert end["type"] == "failed", events[-3:]
    assert "TimeLimitExceeded" in end["data"]["error"], end
    assert (end["data"]["total"], end["data"]["completed"], end["data"]["failed"]) == (3, 1, 1)
    assert AsyncResult(end["data"]["member"], app=workflows.app).state == "FAILURE"


def _group(workflows: Workflows, workflow: str) -> GroupResult:
    """The group's members from the workflow's declarations (the group result is not saved)."""
    state = workflows.state(workflow)
    members = [key[2:] for key in state if key.startswith("b:")]
    return GroupResult(workflow, [AsyncResult(m, app=workflows.app) for m in members])


def test_a_chord_of_twenty_runs_its_callback_then_ends_completed(workflows: Workflows) -> None:
    workflow, events, seen = workflows.run("chord")
    end = events[-1]
    assert end["type"] == "completed", events[-3:]
    assert (end["data"]["total"], end["data"]["completed"]) == (21, 21)
    callback = [
        e["data"]["member"]
        for e in events
        if e["type"] == "member" and e["data"]["event"]["data"].get("task") == "wf.total"
    ]
    assert len(callback) == 2  # started, completed
    assert AsyncResult(callback[0], app=workflows.app).get(timeout=30) == sum(range(20))
    assert len(seen["completed"]) == 21
    # Once every member is declared (the total is final), the progress never goes back.
    progress = [e["data"]["progress"] for e in events if e["data"]["total"] == 21]
    assert progress == sorted(progress) and progress[-1] == 100


def test_a_group_inside_a_chain_is_one_workflow(workflows: Workflows) -> None:
    workflow, events, seen = workflows.run("nested")
    end = events[-1]
    assert end["type"] == "completed", events[-3:]
    assert (end["data"]["total"], end["data"]["completed"]) == (7, 7)
    assert len(seen["completed"]) == 7
    started = [e["data"]["event"] for e in events if e["type"] == "member"]
    names = [e["data"]["task"] for e in started if e["type"] == "started"]
    assert sorted(names) == ["wf.add"] + ["wf.part"] * 5 + ["wf.total"]
    last = asyncio.run(last_event(workflow, config=workflows.config, workflow=True))
    assert last == end
    # the group inside was never a workflow of its own: every workflow is one launched here
    assert _workflows_seen(workflows) == workflows.launched


def _workflows_seen(workflows: Workflows) -> set[str]:
    prefix = workflows.config.history.key_prefix + "workflow:"
    with workflows.redis.client() as r:
        keys = [k.decode() for k in r.keys(prefix + "*:state")]
    return {k[len(prefix) : -len(":state")] for k in keys}
