"""Fixtures for the hub's integration tests: a real hub on 127.0.0.1, port 0, real clients.

    async def test_something(hub):                      # the default app, default settings
        async with hub.client("msgpack") as alice:       # a HubClient (see hub_support)
            await alice.join_ok("room:lobby", {"user": "alice"})

    async def test_other(start_hub):                     # an app and settings of the test's own
        running = await start_hub(app, websocket={"max_message_size": 1024})

Every hub runs in the test's nursery; the test ends it, or it is cancelled
with the nursery when the test returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import trio
from log_support import fail_on_logged_errors
from running_hub import RunningHub, StartHub, default_app

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig


@pytest.fixture
def start_hub(nursery: trio.Nursery) -> StartHub:
    """Start `serve_hub(app, config)` in the test's nursery, on port 0.

    Settings come by section, as in the TOML file:
    `start_hub(app, websocket={"write_timeout": 0.5}, topics={...})`.
    """

    async def start(app: Hub | None = None, **sections: Mapping[str, Any]) -> RunningHub:
        returned = trio.Event()
        server = {"port": 0, **sections.get("server", {})}
        config = HubConfig.from_settings({**sections, "server": server})

        async def run(task_status: trio.TaskStatus[HubRuntime]) -> None:
            await serve_hub(app or default_app(), config, task_status=task_status)
            returned.set()

        runtime = await nursery.start(run)
        return RunningHub(runtime, returned)

    return start


@pytest.fixture
async def hub(start_hub: StartHub) -> RunningHub:
    """The default app (rooms and echo) with default settings."""
    return await start_hub()


@pytest.fixture(autouse=True)
def no_unexpected_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Fail a test if the hub or the runtime logged an error it did not expect.

    Mark tests that make the hub log an error on purpose with `hub_logs_errors`.
    """
    yield from fail_on_logged_errors(request, caplog, marker="hub_logs_errors", who="the hub")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hub_logs_errors: the test makes the hub log an error on purpose"
    )
