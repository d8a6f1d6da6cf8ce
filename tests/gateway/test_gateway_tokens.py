"""Tokens keep tasks and workflows apart, on a real ``notifier gateway`` process: a task's token
never reads a workflow and a workflow's token never reads a task, whatever the ids. A ``sub``
that starts with ``workflow:`` is a workflow's grant: issue_token refuses a task id of that form,
and the task routes answer it with 400."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from notifier import InvalidEvent, Notifier, NotifierConfig
from notifier.config import GatewayConfig
from notifier.events import check_task_id, encode_event
from notifier.gateway import issue_token
from notifier.testing import RedisServer
from notifier.workflows.ids import PREFIX
from notifier.workflows.steps import declaration, member_step

from support.gateway import SECRET, GatewayProcess
from support.helpers import new_task

pytestmark = pytest.mark.timeout(300)

APART = settings(
    max_examples=40,
    # CI (.ci/run sets NOTIFIER_CI) draws the same ids every time; local runs draw afresh.
    derandomize=bool(os.environ.get("NOTIFIER_CI")),
    deadline=None,  # each example is a few requests to a real server
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Why a task route answers 400: the id names a workflow's channel.
NAMES_A_WORKFLOW = f"a task id must not start with {PREFIX!r}"


def _is_task_id(text: str) -> bool:
    try:
        check_task_id(text)
    except InvalidEvent:
        return False
    return text.strip(".") != ""  # "." and ".." are path segments a client resolves away


# Any id the notifier accepts, non-ASCII and URL-special characters included.
IDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="*?[]"), min_size=1, max_size=40
).filter(_is_task_id)
# Task ids: half of them shaped like a workflow's channel id.
TASK_IDS = st.one_of(IDS, IDS.map(lambda wf: PREFIX + wf))


@pytest.fixture(scope="module")
def apart(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway for these tests; its log checked at the end: no traceback, no token."""
    with GatewayProcess(redis_server.url, tmp_path_factory.mktemp("apart")) as gateway:
        yield gateway
    gateway.assert_clean_log()


def with_token(gateway: GatewayProcess, path: str, token: str) -> str:
    return gateway.url(f"{path}{'&' if '?' in path else '?'}token={token}")


def status_of(gateway: GatewayProcess, path: str, token: str) -> int:
    """The status of a GET with ``token``, its body read no further (an SSE stream stays open)."""
    with (
        httpx.Client(timeout=20) as client,
        client.stream("GET", with_token(gateway, path, token)) as response,
    ):
        return response.status_code


def error_of(gateway: GatewayProcess, path: str, token: str) -> tuple[int, str]:
    response = httpx.get(with_token(gateway, path, token), timeout=20)
    return response.status_code, response.json().get("error", "")


def test_a_tasks_token_for_an_id_that_names_a_workflow_is_refused_when_issued() -> None:
    """issue_token refuses a task id that starts with ``workflow:``, saying why and pointing to
    ``workflow=True``; the workflow's own token is issued."""
    config = NotifierConfig(gateway=GatewayConfig(secret=SECRET))
    with pytest.raises(InvalidEvent) as refused:
        issue_token(f"{PREFIX}wf1", config=config)
    message = str(refused.value)
    assert "issue_token('wf1', config=..., workflow=True)" in message, message
    assert "workflow's channel" in message, message
    assert issue_token("wf1", config=config, workflow=True)


@APART
@given(task_id=TASK_IDS, workflow_id=IDS)
@example(task_id=f"{PREFIX}wf1", workflow_id="wf1")
@example(task_id="wf1", workflow_id="wf1")
@example(task_id=f"{PREFIX}{PREFIX}wf1", workflow_id=f"{PREFIX}wf1")
def test_a_tasks_token_never_reads_a_workflow(
    apart: GatewayProcess, task_id: str, workflow_id: str
) -> None:
    """Whatever the two ids: a task's token is refused when its id names a workflow's
    channel, and otherwise reads its task (200, or 404 when it has no events) and gets 403 on
    every workflow route."""
    try:
        token = issue_token(task_id, config=apart.config)
    except InvalidEvent:
        assert task_id.startswith(PREFIX)
        return
    own = f"/tasks/{quote(task_id, safe='')}/last"
    assert status_of(apart, own, token) in {200, 404}
    workflow = quote(workflow_id, safe="")
    for path in (f"/workflows/{workflow}/last", f"/workflows/{workflow}/events"):
        assert 403 == status_of(apart, path, token), path


@APART
@given(task_id=TASK_IDS, workflow_id=IDS)
@example(task_id=f"{PREFIX}wf1", workflow_id="wf1")
@example(task_id="wf1", workflow_id="wf1")
@example(task_id=f"{PREFIX}{PREFIX}wf1", workflow_id=f"{PREFIX}wf1")
def test_a_workflows_token_never_reads_a_task(
    apart: GatewayProcess, task_id: str, workflow_id: str
) -> None:
    """Whatever the two ids: a workflow's token reads its workflow (200, or 404 when it has no
    events), and on a task route gets 400 for a task id that names a workflow's channel, else
    403."""
    token = issue_token(workflow_id, config=apart.config, workflow=True)
    own = f"/workflows/{quote(workflow_id, safe='')}/last"
    assert status_of(apart, own, token) in {200, 404}
    expected = 400 if task_id.startswith(PREFIX) else 403
    task = quote(task_id, safe="")
    for path in (f"/tasks/{task}/last", f"/tasks/{task}/events"):
        assert expected == status_of(apart, path, token), path


def test_a_task_route_answers_400_for_an_id_that_names_a_workflow(
    apart: GatewayProcess,
    redis_server: RedisServer,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """With the workflow's own token, a workflow with events is read on its routes, while
    every task route for ``workflow:<id>`` answers 400 (WebSocket: close 1008) saying why."""
    n = notifier_factory(redis_server.url, history={"enabled": True})
    workflow, task = new_task("wf"), new_task("only")
    started = encode_event(task, "started", {"task": "t", "retries": 0}, 1 << 20)
    assert n.integration.publish_step(declaration(workflow, branch=task, size=1, seal=1))
    assert n.integration.publish_step(member_step(workflow, task, "started", started, None))
    assert n.flush(10)
    token = issue_token(workflow, config=apart.config, workflow=True)
    assert 200 == status_of(apart, f"/workflows/{workflow}/last", token)
    channel = quote(PREFIX + workflow, safe="")
    for path in (f"/tasks/{channel}/last", f"/tasks/{channel}/events", f"/?task={channel}"):
        status, error = error_of(apart, path, token)
        assert (400, True) == (status, NAMES_A_WORKFLOW in error), (path, error)
    ws_url = apart.url(f"/ws/tasks/{channel}?token={token}", "ws")
    with connect(ws_url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert 1008 == closed.value.rcvd.code
    assert NAMES_A_WORKFLOW in closed.value.rcvd.reason
