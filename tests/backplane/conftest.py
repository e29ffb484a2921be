"""The backplanes the interface suite runs against.

Each implementation joins the `backplane` and `small_backplane` fixtures'
params: the in-process one now; a Redis one (started by the suite on
loopback) when it exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from valkey_support import ValkeyServer

from hub.backplane import Backplane, LocalBackplane
from hub.backplane.redis import RedisBackplane

# What the interface tests assume of the backplanes they are given.
HISTORY_SIZE = 100
SMALL_HISTORY_SIZE = 5
RETENTION_SECONDS = 60.0


async def _open(
    kind: str, history_size: int, request: pytest.FixtureRequest
) -> AsyncIterator[Backplane]:
    if kind == "local":
        plane: Backplane = LocalBackplane(
            history_size=history_size, retention_seconds=RETENTION_SECONDS
        )
        yield plane
        await plane.aclose()
        return
    server: ValkeyServer = request.getfixturevalue("valkey_server")
    server.flush()
    redis = RedisBackplane(
        server.url,
        history_size=history_size,
        retention_seconds=RETENTION_SECONDS,
        clock=trio.current_time,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(redis.run)
        await redis.wait_healthy()
        yield redis
        await redis.aclose()


@pytest.fixture(params=["local", "redis"])
async def backplane(request: pytest.FixtureRequest) -> AsyncIterator[Backplane]:
    async for plane in _open(request.param, HISTORY_SIZE, request):
        yield plane


@pytest.fixture(params=["local", "redis"])
async def small_backplane(request: pytest.FixtureRequest) -> AsyncIterator[Backplane]:
    async for plane in _open(request.param, SMALL_HISTORY_SIZE, request):
        yield plane
