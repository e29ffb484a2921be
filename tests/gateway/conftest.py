"""Fixtures for the gateway tests: a real gateway on 127.0.0.1, port 0."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import trio
from gateway_support import RunningGateway, StartGateway
from log_support import fail_on_logged_errors

from hub.gateway import (
    Authenticate,
    GatewayConfig,
    GatewayEvent,
    GatewayHandle,
    WebSocketRoute,
    serve_echo,
    serve_gateway,
)
from hub.http import HttpRoute


@pytest.fixture(autouse=True)
def no_unexpected_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Fail a test if the gateway logged an error it did not expect.

    Tests that provoke a logged error on purpose are marked
    `@pytest.mark.gateway_logs_errors`.
    """
    yield from fail_on_logged_errors(
        request, caplog, marker="gateway_logs_errors", who="the gateway"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gateway_logs_errors: the test makes the gateway log an error on purpose"
    )


@pytest.fixture
def start_gateway(nursery: trio.Nursery) -> StartGateway:
    """Start a gateway in the test's nursery; by default it serves the echo route at /echo.

    The gateway runs in its own cancel scope (`RunningGateway.scope`) so a
    test can shut it down on its own; the test nursery cancels it otherwise.
    """

    async def start(
        config: GatewayConfig | None = None,
        *,
        websocket_routes: Sequence[WebSocketRoute] = (WebSocketRoute("/echo", serve_echo),),
        http_routes: Sequence[HttpRoute] = (),
        authenticate: Authenticate | None = None,
    ) -> RunningGateway:
        events: list[GatewayEvent] = []
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[GatewayHandle]) -> None:
            with scope:
                await serve_gateway(
                    config or GatewayConfig(port=0),
                    websocket_routes=websocket_routes,
                    http_routes=http_routes,
                    authenticate=authenticate,
                    observe=events.append,
                    task_status=task_status,
                )

        handle = await nursery.start(run)
        return RunningGateway(handle, events, scope)

    return start
