"""The gateway: HTTP and WebSocket on one TCP port, optionally over TLS.

Every accepted connection has its request head read with h11 (bounded in
size and time). A WebSocket upgrade for a path in `websocket_routes` is
checked (origin, handshake headers, subprotocol, authentication), answered
with 101, and the route's handler runs with the open `WebSocketTransport`
(see `hub.transport.websocket`). Any other request is served by
`http_routes` (see `hub.http`).

The gateway knows nothing of actors, topics or the wire protocol. The
transport keeps the connection healthy on its own (pings for quiet peers,
1001 for silent ones, the message size limit, a Close with the right RFC 6455
code when the peer breaks the protocol), and the gateway always closes the
socket when the handler returns.

    config.py     GatewayConfig (where it listens, its limits), the TLS context
    serve.py      serve_gateway: listeners and the accept loop; GatewayHandle
    server.py     one connection: TLS, HTTP requests kept alive, the hand-off
    upgrade.py    upgrade checks (origin, handshake, subprotocol) and authenticate
    websocket.py  WebSocket routes and the run of their handlers; serve_echo
    longpoll.py   long-polling routes: sessions opened, polled, posted to, reaped
    events.py     what the observer hears (for metrics), and refusing a request

Lifecycle::

    gateway = await nursery.start(partial(serve_gateway, config, websocket_routes=...))
    gateway.port                      # bound port (port=0 picks one)
    await gateway.stop_accepting()    # close listeners; open connections carry on
    await gateway.wait_drained()      # returns once the last connection is gone
    nursery.cancel_scope.cancel()     # handlers cancelled, sockets closed with 1001
"""

from hub.gateway.config import GatewayConfig, server_ssl_context
from hub.gateway.events import (
    GatewayEvent,
    IdleClosed,
    ProtocolViolationClosed,
    RejectReason,
    RequestRejected,
    WebSocketAccepted,
)
from hub.gateway.longpoll import LongPollGateway, LongPollRoute, TransportHandler
from hub.gateway.serve import GatewayHandle, serve_gateway
from hub.gateway.upgrade import Authenticate, AuthenticationError, ConnectRequest, GatewayError
from hub.gateway.websocket import ConnectInfo, WebSocketHandler, WebSocketRoute, serve_echo

__all__ = [
    "Authenticate",
    "AuthenticationError",
    "ConnectInfo",
    "ConnectRequest",
    "GatewayConfig",
    "GatewayError",
    "GatewayEvent",
    "GatewayHandle",
    "IdleClosed",
    "LongPollGateway",
    "LongPollRoute",
    "ProtocolViolationClosed",
    "RejectReason",
    "RequestRejected",
    "TransportHandler",
    "WebSocketAccepted",
    "WebSocketHandler",
    "WebSocketRoute",
    "serve_echo",
    "serve_gateway",
    "server_ssl_context",
]
