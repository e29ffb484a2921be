"""A hub started for a test (`start_hub` in conftest.py), and the test's default app.

Test modules import these from here, never from `conftest`: which
`conftest` module `import conftest` finds depends on which suites pytest
collected first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio
from hub_support import HubClient, open_client

from hub.app import Hub, HubRuntime
from hub.services import EchoService, RoomService


def default_app() -> Hub:
    """Chat rooms and echo, as the demo serves them."""
    app = Hub("test hub")
    app.route("room:*", RoomService)
    app.route("echo:*", EchoService)
    return app


@attrs.define(eq=False)
class RunningHub:
    """A hub started by `start_hub`."""

    runtime: HubRuntime
    #: Set when `serve_hub` returns on its own (after a graceful shutdown).
    returned: trio.Event

    @property
    def port(self) -> int:
        assert self.runtime.gateway is not None
        return self.runtime.gateway.port

    @property
    def websocket_url(self) -> str:
        return self.runtime.websocket_url

    @property
    def metrics(self) -> Any:
        return self.runtime.metrics

    def client(
        self,
        codec: str = "json",
        *,
        query: str = "",
        subprotocols: Sequence[str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> contextlib.AbstractAsyncContextManager[HubClient]:
        """Connect a HubClient speaking `codec` ("json" or "msgpack") to this hub."""
        url = self.websocket_url + (f"?{query}" if query else "")
        return open_client(url, codec, subprotocols=subprotocols, headers=headers)


StartHub = Callable[..., Awaitable[RunningHub]]
