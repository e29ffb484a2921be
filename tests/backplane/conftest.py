"""The backplanes the interface suite runs against.

Each implementation joins the `backplane` and `small_backplane` fixtures'
params: the in-process one now; a Redis one (started by the suite on
loopback) when it exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hub.backplane import Backplane, LocalBackplane

# What the interface tests assume of the backplanes they are given.
HISTORY_SIZE = 100
SMALL_HISTORY_SIZE = 5
RETENTION_SECONDS = 60.0


@pytest.fixture(params=["local"])
async def backplane(request: pytest.FixtureRequest) -> AsyncIterator[Backplane]:
    plane = LocalBackplane(history_size=HISTORY_SIZE, retention_seconds=RETENTION_SECONDS)
    yield plane
    await plane.aclose()


@pytest.fixture(params=["local"])
async def small_backplane(request: pytest.FixtureRequest) -> AsyncIterator[Backplane]:
    plane = LocalBackplane(history_size=SMALL_HISTORY_SIZE, retention_seconds=RETENTION_SECONDS)
    yield plane
    await plane.aclose()
