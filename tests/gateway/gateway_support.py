"""What the gateway tests share besides the raw-socket client (that is `wire_support`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from hub.gateway import GatewayEvent, GatewayHandle


@attrs.define
class RunningGateway:
    """A gateway started by the `start_gateway` fixture, with the events it reported."""

    handle: GatewayHandle
    events: list[GatewayEvent]
    # Cancelling this scope shuts this gateway down alone.
    scope: trio.CancelScope

    @property
    def port(self) -> int:
        return self.handle.port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


StartGateway = Callable[..., Awaitable[RunningGateway]]
