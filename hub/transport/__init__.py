"""Transports: how encoded messages reach one client and come back.

- `base`: the `Transport` interface, `Wire` (one encoded message shared by
  every client that gets it), the bounded `Outbox`;
- `websocket`: RFC 6455 over a TCP or TLS stream (wsproto parses, the hub writes);
- `longpoll`: HTTP long-polling, for clients that cannot open a WebSocket;
- `memory`: an in-memory pair, for tests that drive a session with no socket.
"""

from hub.transport.base import (
    DEFAULT_OUTBOX_CAPACITY,
    Outbox,
    OutboxFullError,
    Transport,
    TransportClosed,
    Wire,
)
from hub.transport.longpoll import LongPollSettings, LongPollTransport
from hub.transport.memory import MemoryClient, MemoryTransport, memory_transport_pair
from hub.transport.websocket import (
    WebSocketObserver,
    WebSocketSettings,
    WebSocketTransport,
    accept_headers,
    build_frame,
    valid_key,
)

__all__ = [
    "DEFAULT_OUTBOX_CAPACITY",
    "LongPollSettings",
    "LongPollTransport",
    "MemoryClient",
    "MemoryTransport",
    "Outbox",
    "OutboxFullError",
    "Transport",
    "TransportClosed",
    "WebSocketObserver",
    "WebSocketSettings",
    "WebSocketTransport",
    "Wire",
    "accept_headers",
    "build_frame",
    "memory_transport_pair",
    "valid_key",
]
