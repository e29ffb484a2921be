"""Fixtures for the actor runtime's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

import actors

# How long a test that uses the `system` fixture may take, setup and teardown
# included, on trio's clock. A hang fails the test with trio.TooSlowError
# instead of waiting for pytest-timeout.
SYSTEM_FIXTURE_SECONDS = 30


@pytest.fixture
async def system() -> AsyncIterator[actors.System]:
    """A running system for the test's body, stopped at teardown."""
    with trio.fail_after(SYSTEM_FIXTURE_SECONDS):
        async with actors.open_system("test", handle_signals=False) as system:
            yield system
