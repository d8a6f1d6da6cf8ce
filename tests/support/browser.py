"""A real headless Chromium (Debian's, driven by Playwright) for the page tests: ``browser`` (one
per test module) and ``page`` (a fresh context per test). Without Chromium the tests skip, or
fail when ``NOTIFIER_REQUIRE_BROWSER`` is set (``.ci/run`` sets it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As the machine's own probe runs it: headless, and nothing that would reach for the network.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        reason = "no Chromium on this machine (apt-get install chromium); .ci/run installs it"
        if os.environ.get("NOTIFIER_REQUIRE_BROWSER"):  # set by .ci/run: CI must not skip these
            pytest.fail(reason)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # bypass_csp: the page forbids eval(), which Playwright's wait_for_function uses.
    context = browser.new_context(viewport={"width": 900, "height": 600}, bypass_csp=True)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
