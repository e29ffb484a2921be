"""A Python client for the hub, on trio, that keeps its connection up by itself.

    async with hub.client.connect("ws://127.0.0.1:8000/ws") as client:
        room = await client.join("room:lobby", {"user": "ada"})
        room.on("message", lambda payload: print(payload["user"], payload["text"]))
        await room.publish("message", {"text": "hello"}, ack=True)
        print(await client.call("echo:me", "ping", {"n": 1}, timeout=2.0))
        async for push in room:          # or iterate the pushes yourself
            ...

Pushes that arrive before the first `on` (or `async for`) are held for it,
so nothing sent right after a join is lost. When the connection drops, the
client reconnects with exponential backoff and full jitter, joins its
channels again from the last position each saw (the hub replays what they
missed), and sends what was published or called meanwhile; each request
waits at most its timeout. docs/client-python.md has it all.

- `connection`: `Client`, `open_client` (any `Dial`), the link task;
- `channel`: `Channel`, one topic across connections;
- `links`: `Link` and `Dial`, the seam to WebSockets (`dial_websocket`) or memory;
- `backoff`: the reconnect delays;
- `errors`: the exceptions, each with a `code`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from hub.client.backoff import Backoff
from hub.client.channel import HELD_PUSHES, PUSH_BUFFER, Channel, ChannelState, Handler
from hub.client.connection import (
    CALL_REPLY_GRACE,
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_MAX_BUFFERED,
    DEFAULT_TIMEOUT,
    Client,
    ClientOptions,
    TokenSource,
    open_client,
)
from hub.client.errors import (
    BufferFullError,
    ClientClosedError,
    ClientError,
    ConnectError,
    ConnectionLostError,
    ReplyError,
    RequestTimeoutError,
)
from hub.client.links import Dial, Link, LinkClosed, dial_websocket
from hub.protocol import MAX_MESSAGE_BYTES, SUBPROTOCOL_MSGPACK, codec_for

__all__ = [
    "CALL_REPLY_GRACE",
    "DEFAULT_HEARTBEAT_SECONDS",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_TIMEOUT",
    "HELD_PUSHES",
    "PUSH_BUFFER",
    "Backoff",
    "BufferFullError",
    "Channel",
    "ChannelState",
    "Client",
    "ClientClosedError",
    "ClientError",
    "ClientOptions",
    "ConnectError",
    "ConnectionLostError",
    "Dial",
    "Handler",
    "Link",
    "LinkClosed",
    "ReplyError",
    "RequestTimeoutError",
    "TokenSource",
    "connect",
    "dial_websocket",
    "open_client",
]


@asynccontextmanager
async def connect(
    url: str,
    *,
    subprotocol: str = SUBPROTOCOL_MSGPACK,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    refresh: TokenSource | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = DEFAULT_TIMEOUT,
    max_message_size: int = MAX_MESSAGE_BYTES,
    request_timeout: float = DEFAULT_TIMEOUT,
    heartbeat_seconds: float | None = DEFAULT_HEARTBEAT_SECONDS,
    reconnect: bool = True,
    backoff_base: float = 0.5,
    backoff_cap: float = 30.0,
    stable_seconds: float = 5.0,
    max_attempts: int | None = None,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
    random: Callable[[], float] | None = None,
) -> AsyncIterator[Client]:
    """Connect to the hub at `url` (`ws://host:port/ws`) for the body of the block.

    `token` (a signed token, docs/auth.md) is sent as `Authorization:
    Bearer`; when the hub says it expires, `refresh()` (sync or async) is
    asked for a new one, which is handed over in-band (`Client.refresh`)
    and sent by later reconnections. `query` is added to the URL, `headers`
    to the request; `subprotocol` picks the codec (`triohub.v1.msgpack` or
    `triohub.v1.json`).
    The first connection is made before the body runs: if the hub cannot be
    reached or refuses (wrong origin, bad token: `status`), ConnectError.
    The other keywords are `ClientOptions` (docs/client-python.md).
    """
    codec_for(subprotocol)  # an unknown subprotocol fails here, not at the first dial
    dial = dial_websocket(
        url,
        subprotocol=subprotocol,
        query=query,
        headers=headers,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
        close_timeout=DEFAULT_TIMEOUT,
        max_message_size=max_message_size,
    )
    options = ClientOptions(
        request_timeout=request_timeout,
        heartbeat_seconds=heartbeat_seconds,
        reconnect=reconnect,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
        stable_seconds=stable_seconds,
        max_attempts=max_attempts,
        max_buffered=max_buffered,
        random=random,
        refresh=refresh,
    )
    async with open_client(dial, options, token=token) as client:
        yield client
