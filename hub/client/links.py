"""Links: one connection's worth of messages to and from a hub, whatever carries them.

The client (`hub.client.Client`) opens a link with a `Dial` each time it
connects or reconnects, and sees only this interface. `dial_websocket` opens
a real WebSocket (trio-websocket); `hub.testing` dials an in-memory
transport into a hub running in the same process, with no socket.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio_websocket

from hub.client.errors import ConnectError
from hub.errors import HubError
from hub.protocol import Message

__all__ = ["Dial", "Link", "LinkClosed", "dial_websocket"]


class LinkClosed(HubError):
    """The link is closed; `code` and `reason` are its close code and reason (RFC 6455)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}: {reason})" if reason else f"closed ({code})")
        self.code = code
        self.reason = reason


class Link(Protocol):
    """One open connection: messages in, messages out, a close."""

    @property
    def subprotocol(self) -> str: ...

    async def send(self, message: Message) -> None:
        """Send one message; raises LinkClosed once the link is closed."""

    async def receive(self) -> Message:
        """The next message; raises LinkClosed (with its code) once the link is closed."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the link (bounded in time); closing a closed link does nothing."""


#: Opens a link for the body of an `async with`, with the client's current
#: token (None without one); raises ConnectError if it cannot.
Dial = Callable[[str | None], AbstractAsyncContextManager[Link]]


class _WebSocketLink:
    def __init__(self, websocket: trio_websocket.WebSocketConnection) -> None:
        self._websocket = websocket

    @property
    def subprotocol(self) -> str:
        return self._websocket.subprotocol or ""

    async def send(self, message: Message) -> None:
        try:
            await self._websocket.send_message(message)
        except trio_websocket.ConnectionClosed as error:
            raise _closed(error) from None

    async def receive(self) -> Message:
        try:
            return await self._websocket.get_message()
        except trio_websocket.ConnectionClosed as error:
            raise _closed(error) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._websocket.aclose(code, reason)


def _closed(error: trio_websocket.ConnectionClosed) -> LinkClosed:
    reason = error.reason
    return LinkClosed(getattr(reason, "code", None), getattr(reason, "reason", None) or "")


def dial_websocket(
    url: str,
    *,
    subprotocol: str,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float,
    close_timeout: float,
    max_message_size: int,
) -> Dial:
    """A Dial that opens a WebSocket to `url` offering `subprotocol`.

    The client's token, when it has one, goes as `Authorization: Bearer`
    (docs/auth.md): each dial sends the token current then.
    """
    if query:
        parts = urlsplit(url)
        extra = urlencode(dict(query))
        url = urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
    base_headers = dict(headers or {})

    @asynccontextmanager
    async def dial(token: str | None) -> AsyncIterator[Link]:
        sent = dict(base_headers)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        extra_headers = [(name.encode(), value.encode()) for name, value in sent.items()]
        opened = False
        try:
            async with trio_websocket.open_websocket_url(
                url,
                ssl_context=ssl_context,
                subprotocols=[subprotocol],
                extra_headers=extra_headers,
                connect_timeout=connect_timeout,
                disconnect_timeout=close_timeout,
                max_message_size=max_message_size,
            ) as websocket:
                opened = True
                yield _WebSocketLink(websocket)
        except trio_websocket.ConnectionRejected as error:
            if opened:
                raise
            body = (error.body or b"").decode(errors="replace").strip()
            raise ConnectError(
                f"the hub refused the connection: HTTP {error.status_code} {body}".rstrip(),
                error.status_code,
            ) from error
        except (trio_websocket.HandshakeError, OSError) as error:
            if opened:
                raise
            raise ConnectError(f"cannot connect to {url}: {error!r}") from error

    return dial
