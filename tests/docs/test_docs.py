"""The docs cannot drift: the site builds with --strict, and every Python block runs.

A ```python block in README.md or docs/**/*.md runs as a script of its own against a throwaway
redis-server (``$NOTIFIER_REDIS_URL``), in an empty directory, unless the line before it is an
``<!-- excerpt: <reason> -->`` marker: an excerpt is only compiled, to catch syntax errors.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

import notifier.celery
from notifier import load_config
from notifier.gateway import create_app
from notifier.testing import RedisServer

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
EXCERPT = re.compile(r"<!-- excerpt: \S.*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    code: str
    excerpt: bool

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(text: str, page: Path) -> Iterator[Block]:
    """Each ```python block of a page, with its line and whether an excerpt marker precedes it."""
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 1
        yield Block(page, line, match.group(1), bool(EXCERPT.search(before)))


BLOCKS = [block for page in PAGES for block in python_blocks(page.read_text(), page)]
RUNNABLE = [b for b in BLOCKS if not b.excerpt]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A throwaway redis-server for the blocks, emptied before each one."""
    with RedisServer() as server:
        yield server


def run_block(code: str, redis_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env["NOTIFIER_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=45
    )


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_python_block_runs(block: Block, redis: RedisServer, tmp_path: Path) -> None:
    """A runnable block of the docs runs to its end, exit 0, against a fresh redis-server."""
    redis.client().flushall()
    done = run_block(block.code, redis.url, tmp_path)
    assert 0 == done.returncode, f"{block.name} failed:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.excerpt], ids=lambda b: b.name)
def test_excerpt_compiles(block: Block) -> None:
    """A block marked as an excerpt is at least valid Python (await allowed: it may be a
    coroutine's body)."""
    compile(block.code, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_a_failing_block_fails_its_test(redis: RedisServer, tmp_path: Path) -> None:
    """The runner sees a block that raises: the drift test can fail."""
    code = "from notifier import Notifier\nNotifier().publish_progres('t', 1.0)\n"
    done = run_block(code, redis.url, tmp_path)
    assert 0 != done.returncode and "publish_progres" in done.stderr


def test_excerpt_marker_is_read() -> None:
    """Only a marker on the line right before the fence makes a block an excerpt."""
    text = "<!-- excerpt: needs a web app -->\n```python\nx(\n```\n\nx\n```python\ny = 1\n```\n"
    blocks = list(python_blocks(text, ROOT / "README.md"))
    assert [True, False] == [b.excerpt for b in blocks]
    assert [2, 7] == [b.line for b in blocks]


def test_site_builds_strict(tmp_path: Path) -> None:
    """mkdocs build --strict passes: no broken link, no missing page, the generated pages build.
    (Not -q: it hides the warnings that --strict counts, and the build passes anyway.)"""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    configuration = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "drain_timeout" in configuration and "progress_interval" in configuration
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "check-config" in cli and "--workflow" in cli


def test_readme_is_short_and_names_the_two_commands() -> None:
    """The README stays within 150 lines and names make demo and make test near the top."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    top = "\n".join(lines[:40])
    assert "make demo" in top and "make test" in top
    assert "pip install 'celery-notifier[celery]'" in "\n".join(lines)


def test_install_signature_is_the_documented_one() -> None:
    """The Celery page shows install()'s real signature, flush_on_task_end and workflows too."""
    page = (ROOT / "docs" / "celery.md").read_text()
    shown = []
    for p in inspect.signature(notifier.celery.install).parameters.values():
        if p.kind is p.KEYWORD_ONLY and "*" not in shown:
            shown.append("*")
        shown.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    assert f"install({', '.join(shown)})" in page


def test_no_page_calls_an_install_argument_a_setting() -> None:
    """flush_on_task_end is an install() argument, never a [celery] key of the config file."""
    for page in PAGES:
        text = page.read_text()
        assert "[celery] flush_on_task_end" not in text, page
        assert "celery.flush_on_task_end" not in text, page


def test_gateway_page_says_at_once_that_it_needs_history() -> None:
    """A user setting up the gateway reads, before the command that starts it, that publishers
    need [history] enabled = true, or a page opened after the task ended waits forever."""
    page = (ROOT / "docs" / "gateway.md").read_text()
    first_example = page.index("notifier gateway [")
    assert "enabled = true" in page[:first_example]
    assert "waits" in page[:first_example]


def test_progress_range_is_documented() -> None:
    """The guarantees say progress is 0 to 100 by convention and that it is not checked."""
    page = (ROOT / "docs" / "guarantees.md").read_text()
    assert "0 to 100" in page and 'publish_progress("task-42", 150.0)' in page


def test_client_script_answers_without_token_or_redis() -> None:
    """The Kubernetes note's liveness route: GET /client.js answers 200 with no token, from a
    non-loopback client, while Redis is unreachable."""
    config = load_config(None)
    config = replace(
        config,
        redis=replace(config.redis, url="redis://127.0.0.1:1/0"),
        gateway=replace(config.gateway, secret="s" * 32),
    )

    async def get() -> int:
        transport = httpx.ASGITransport(app=create_app(config), client=("10.1.2.3", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return (await client.get("/client.js")).status_code

    assert 200 == asyncio.run(get())
