"""Fixtures for the browser tests: real headless Chromium against a real `hub serve`.

Playwright's sync API runs in plain `def` tests, outside trio. Chromium is
Debian's (/usr/bin/chromium; scripts/test installs it): a missing browser or
a missing `playwright` package fails these tests with what to install, it
never skips them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, HubProcess, running_hub

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# Playwright's waits (expect(), wait_for_function) give up after this long,
# well inside the per-test timeout of 60 s.
WAIT_MS = 15_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole session."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need Playwright for Python: .venv/bin/pip install -e '.[test]' "
            "(do not run `playwright install`: the tests use Debian's chromium)",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: "
            "apt-get update && apt-get install -y chromium (scripts/test does this), "
            "or point HUB_TEST_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def hub_server() -> Iterator[HubProcess]:
    """A hub shared by a module's tests that leave it running as they found it."""
    with running_hub() as hub:
        yield hub


@pytest.fixture
def own_hub() -> Iterator[HubProcess]:
    """A hub for one test alone, which may stop, restart or freeze it."""
    with running_hub() as hub:
        yield hub


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """Make pages, each in its own browser context (no shared storage).

    A test fails if any of its pages threw an uncaught exception.
    """
    contexts = []
    errors: list[str] = []

    def make() -> Page:
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{error.name}: {error.message}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
