"""Fixtures for the gateway tests: a real gateway on 127.0.0.1, port 0."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import pytest
import trio
from gateway_support import RunningGateway, StartGateway

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

    The gateway logs and survives a failing connection, so a bug in it would
    otherwise go unnoticed whenever the client still sees a sane result.
    Tests that provoke a logged error on purpose are marked
    `@pytest.mark.gateway_logs_errors`.
    """
    caplog.set_level(logging.WARNING, logger="hub")
    yield
    if request.node.get_closest_marker("gateway_logs_errors"):
        return
    errors = [
        record
        for phase in ("setup", "call", "teardown")
        for record in caplog.get_records(phase)
        if record.levelno >= logging.ERROR
    ]
    assert not errors, "gateway logged errors:\n" + "\n".join(
        record.getMessage() + "\n" + (record.exc_text or "") for record in errors
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
