"""WebSocket routes, and the run of a route's handler on an accepted connection."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import attrs
import trio

from hub.http import RemoteAddress
from hub.transport import TransportClosed, WebSocketTransport, Wire

__all__ = ["ConnectInfo", "WebSocketHandler", "WebSocketRoute", "run_handler", "serve_echo"]

logger = logging.getLogger(__name__)

# Close codes the gateway itself sends (RFC 6455 §7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_INTERNAL_ERROR: Final = 1011


@attrs.frozen
class ConnectInfo:
    """What a WebSocket handler learns about its connection.

    `identity` is what `authenticate` returned (None without a hook);
    `subprotocol` is the one selected, None if the route declares none.
    """

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    remote: RemoteAddress | None
    subprotocol: str | None
    identity: object


WebSocketHandler = Callable[[WebSocketTransport, ConnectInfo], Awaitable[None]]


@attrs.frozen
class WebSocketRoute:
    """Accept WebSocket connections at `path` and run `handler` for each.

    `subprotocols` lists what the route speaks, preferred first; a request
    offering none of them is refused with 400. An empty tuple accepts any
    request and selects no subprotocol.

    The handler may close the transport itself with any code; otherwise the
    gateway closes it when the handler returns (1000), raises (1011, and the
    error is logged) or is cancelled by shutdown (1001). `TransportClosed`
    escaping the handler is the peer leaving, not an error.
    """

    path: str
    handler: WebSocketHandler
    subprotocols: tuple[str, ...] = ()


async def run_handler(
    transport: WebSocketTransport,
    info: ConnectInfo,
    route: WebSocketRoute,
    *,
    close_timeout: float,
) -> None:
    """Run `route.handler` on an open transport; close it whatever happens."""
    # The handler keeps of `info` what it needs (the hub: the identity);
    # the request's headers are not held here for the connection's life.
    handling = route.handler(transport, info)
    del info
    try:
        await handling
    except TransportClosed:
        pass  # the peer left, or broke the protocol (already answered)
    except Exception:
        logger.exception("WebSocket handler for %s failed", route.path)
        transport.close(CLOSE_INTERNAL_ERROR, "internal error")
    except BaseException:
        # Cancelled from outside: the gateway is shutting down. Send 1001
        # (shielded, so the shutdown does not cut it) and close without
        # waiting for the peer's answer.
        transport.close(CLOSE_GOING_AWAY, "server shutting down")
        with trio.move_on_after(close_timeout, shield=True):
            with contextlib.suppress(TransportClosed):
                await transport.flush()
        raise
    # No-op if the handler or the peer closed already; else the closing
    # handshake, bounded by close_timeout. Not shielded: a shutdown
    # arriving now just closes the socket.
    transport.close(CLOSE_NORMAL, "handler finished")
    await transport.aclose()


async def serve_echo(transport: WebSocketTransport, info: ConnectInfo) -> None:
    """Send every message back as it came: text as text, binary as binary.

    Returns when the peer closes. Mount it with `WebSocketRoute("/echo", serve_echo)`.
    """
    while True:
        message = await transport.receive()
        transport.send(Wire(message))
        await transport.flush()
