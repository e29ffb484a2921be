"""A Python client for the hub, on trio.

    async with hub.client.connect("ws://127.0.0.1:8000/ws") as client:
        room = await client.join("room:lobby", {"user": "ada"})
        room.on("message", lambda payload: print(payload["user"], payload["text"]))
        await room.publish("message", {"text": "hello"}, ack=True)
        print(await client.call("echo:me", "ping", {"n": 1}, timeout=2.0))
        async for push in room:          # or iterate the pushes yourself
            ...

One reader task per connection decodes what the server sends (with
`hub.protocol.ClientMachine`) and hands each Push to its topic's handlers and
iterator, and each Reply to the request waiting for it. Everything runs in
the nursery `connect` opens: leaving the block closes the socket and ends it.
"""

from __future__ import annotations

import inspect
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import trio
import trio_websocket

from hub.errors import HubError
from hub.protocol import (
    SUBPROTOCOL_MSGPACK,
    ClientMachine,
    Ended,
    Error,
    ErrorReceived,
    Expiring,
    Message,
    Payload,
    Push,
    Reply,
    ReplyReceived,
    codec_for,
)

# How long a request waits for its Reply unless told otherwise, in seconds.
DEFAULT_TIMEOUT: Final = 5.0

# A call's timeout goes to the server, which answers `call_timeout` when it
# runs out; the client waits this much longer for that answer before it
# gives up on its own (RequestTimeoutError).
CALL_REPLY_GRACE: Final = 1.0

# Pushes kept for a topic's `async for` until the app takes them. When it is
# full the reader waits, which slows this connection only (and the server
# disconnects us if we fall far behind): iterate, or use handlers.
PUSH_BUFFER: Final = 256

# A heartbeat goes out this often; a connection that does not answer one
# within the same time is taken for dead and closed.
DEFAULT_HEARTBEAT_SECONDS: Final = 20.0

Handler = Callable[[Payload], Awaitable[None] | None]

# Gets a new token for the connection's user when the hub says the current
# one expires (`connect(refresh=...)`).
TokenSource = Callable[[], Awaitable[str] | str]

logger = logging.getLogger(__name__)


class ClientError(HubError):
    """Base of the client's errors."""


class ReplyError(ClientError):
    """The server answered a request with an error Reply or Error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestTimeoutError(ClientError):
    """No Reply arrived in time; a late one is dropped."""


class ConnectionLostError(ClientError):
    """The connection closed while a request was waiting, or before it was sent."""


@attrs.define(eq=False)
class _Waiter:
    done: trio.Event = attrs.Factory(trio.Event)
    reply: Reply | None = None
    error: Error | None = None


@attrs.define(eq=False)
class Channel:
    """A joined topic: its handlers, its pushes, and requests on it.

    `async for push in channel` yields each Push (the full frame, with
    `event`, `payload` and `offset`) until the membership ends; `ended`
    then holds the server's Ended frame (None if we left or closed). Pushes
    are kept for iteration from the first `async for` on; a full buffer
    (PUSH_BUFFER) makes the reader wait for the iterating task.
    """

    client: Client
    topic: str
    join_reply: Payload
    ended: Ended | None = None
    _handlers: dict[str, list[Handler]] = attrs.Factory(dict)
    _iterating: bool = False
    _send: trio.MemorySendChannel[Push] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[Push] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Push](PUSH_BUFFER)

    def on(self, event: str, handler: Handler) -> None:
        """Call `handler(payload)` (sync or async) for each `event` Push; `*` for all."""
        self._handlers.setdefault(event, []).append(handler)

    async def publish(
        self,
        event: str,
        payload: Payload = None,
        *,
        ack: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        await self.client.publish(self.topic, event, payload, ack=ack, timeout=timeout)

    async def call(
        self, event: str, payload: Payload = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Payload:
        return await self.client.call(self.topic, event, payload, timeout=timeout)

    async def leave(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.client.leave(self.topic, timeout=timeout)

    def __aiter__(self) -> AsyncIterator[Push]:
        # Pushes are buffered for iteration only once someone iterates, so
        # that an app using handlers alone never fills the buffer.
        self._iterating = True
        return self._receive.__aiter__()

    async def _deliver(self, push: Push) -> None:
        for handler in (*self._handlers.get(push.event, ()), *self._handlers.get("*", ())):
            result = handler(push.payload)
            if inspect.isawaitable(result):
                await result
        if self._iterating:
            await self._send.send(push)

    def _close(self, ended: Ended | None) -> None:
        self.ended = ended
        self._send.close()


@attrs.define(eq=False)
class Client:
    """One connection to a hub; get it from `connect`."""

    _websocket: trio_websocket.WebSocketConnection
    _machine: ClientMachine
    _waiters: dict[int, _Waiter] = attrs.Factory(dict)
    _channels: dict[str, Channel] = attrs.Factory(dict)
    _closed: bool = False
    # Where a refresh runs when the hub sends Expiring (set by `connect`).
    _refresh_source: TokenSource | None = None
    _nursery: trio.Nursery | None = None

    @property
    def subprotocol(self) -> str:
        return self._machine.codec.subprotocol

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self._channels

    async def join(
        self,
        topic: str,
        params: Mapping[str, Payload] | None = None,
        *,
        offset: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Channel:
        """Join `topic`; return its Channel. Raises ReplyError if refused."""
        ref, message = self._machine.join(topic, params, offset)
        channel = Channel(self, topic, None)
        self._channels[topic] = channel
        try:
            reply = await self._request(ref, message, timeout)
        except BaseException:
            if self._channels.get(topic) is channel:
                del self._channels[topic]
            raise
        channel.join_reply = reply.payload
        return channel

    async def leave(self, topic: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Leave `topic`; no Push for it arrives after this returns."""
        ref, message = self._machine.leave(topic)
        await self._request(ref, message, timeout)
        channel = self._channels.pop(topic, None)
        if channel is not None:
            channel._close(None)

    async def publish(
        self,
        topic: str,
        event: str,
        payload: Payload = None,
        *,
        ack: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Publish `event` to a joined `topic`; with `ack`, wait for the server's ok."""
        ref, message = self._machine.publish(topic, event, payload, ack=ack)
        if ack:
            await self._request(ref, message, timeout)
        else:
            await self._send(message)

    async def call(
        self, topic: str, event: str, payload: Payload = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Payload:
        """Call the service of a joined `topic` and return its answer.

        The server cuts the call at `timeout` and answers `call_timeout`,
        raised here as ReplyError like any error answer; if no answer comes
        at all within `timeout` + CALL_REPLY_GRACE, RequestTimeoutError.
        """
        ref, message = self._machine.call(topic, event, payload, timeout=timeout)
        reply = await self._request(ref, message, timeout + CALL_REPLY_GRACE)
        return reply.payload

    async def inbox(self, user: str, *, timeout: float = DEFAULT_TIMEOUT) -> Channel:
        """Join `user`'s personal topic (`user:<id>`): its notifications (docs/notifications.md).

        Each notification comes as a Push of its own event with its offset
        (iterate the Channel to see offsets); what is not acknowledged comes
        again on every join. Raises ReplyError `forbidden` for another user's.
        """
        return await self.join(f"user:{user}", timeout=timeout)

    async def ack(self, user: str, offset: int, *, timeout: float = DEFAULT_TIMEOUT) -> Payload:
        """Acknowledge `user`'s notifications up to `offset`, for all its devices.

        Returns the inbox's status (`unread`, `dropped`, `acked`, ...); each
        joined device is pushed it as `$unread`.
        """
        return await self.call(f"user:{user}", "ack", {"offset": offset}, timeout=timeout)

    async def heartbeat(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Send a Heartbeat and wait for its answer."""
        ref, message = self._machine.heartbeat()
        await self._request(ref, message, timeout)

    async def refresh(self, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> float:
        """Hand the hub a new token for this connection's user; return its seconds left.

        Raises ReplyError `invalid_token` (expired, forged) or `forbidden`
        (another user's token: that takes a new connection).
        """
        ref, message = self._machine.refresh(token)
        reply = await self._request(ref, message, timeout)
        assert isinstance(reply.payload, dict)
        expires_in = reply.payload["expires_in"]
        assert isinstance(expires_in, float | int)
        return float(expires_in)

    async def aclose(self) -> None:
        """Close the connection (1000)."""
        await self._websocket.aclose()

    # --- inside ------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        if self._closed:
            raise ConnectionLostError("the connection is closed")
        try:
            await self._websocket.send_message(message)
        except trio_websocket.ConnectionClosed as error:
            raise ConnectionLostError(f"the connection closed: {error.reason}") from error

    async def _request(self, ref: int, message: Message, timeout: float) -> Reply:
        waiter = self._waiters[ref] = _Waiter()
        try:
            with trio.move_on_after(timeout):
                await self._send(message)
                await waiter.done.wait()
        finally:
            self._waiters.pop(ref, None)
        if not waiter.done.is_set():
            self._machine.forget(ref)
            raise RequestTimeoutError(f"no reply to request {ref} within {timeout} s")
        if waiter.error is not None:
            raise ReplyError(waiter.error.code, waiter.error.message)
        if waiter.reply is None:
            raise ConnectionLostError("the connection closed before the reply came")
        reply = waiter.reply
        if not reply.ok:
            raise ReplyError(reply.error_code or "", reply.error_message or "")
        return reply

    async def _serve_reader(self) -> None:
        try:
            while True:
                data = await self._websocket.get_message()
                for event in self._machine.receive(data):
                    match event:
                        case ReplyReceived(reply=reply):
                            waiter = self._waiters.get(reply.ref)
                            if waiter is not None:
                                waiter.reply = reply
                                waiter.done.set()
                        case ErrorReceived(error=error):
                            waiter = self._waiters.get(error.ref or 0)
                            if waiter is not None:
                                waiter.error = error
                                waiter.done.set()
                        case Push(topic=topic):
                            channel = self._channels.get(topic)
                            if channel is not None:
                                await channel._deliver(event)
                        case Ended(topic=topic):
                            channel = self._channels.pop(topic, None)
                            if channel is not None:
                                channel._close(event)
                        case Expiring():
                            # Not here: the reader must go on reading for the Reply.
                            if self._refresh_source is not None and self._nursery is not None:
                                self._nursery.start_soon(self._refresh_from_source)
        except trio_websocket.ConnectionClosed:
            pass  # the end of the connection: every waiter is released below
        finally:
            self._closed = True
            for waiter in self._waiters.values():
                waiter.done.set()
            for channel in self._channels.values():
                channel._close(None)

    async def _refresh_from_source(self) -> None:
        assert self._refresh_source is not None
        try:
            token = self._refresh_source()
            if inspect.isawaitable(token):
                token = await token
            await self.refresh(token)
        except ClientError as error:
            # The hub closes the connection (1008) when the old token runs out.
            logger.warning("refreshing the connection's token failed: %s", error)

    async def _serve_heartbeats(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            try:
                await self.heartbeat(timeout=interval)
            except RequestTimeoutError:
                await self._websocket.aclose(1001, "no heartbeat reply")
                return
            except ConnectionLostError:
                return


@asynccontextmanager
async def connect(
    url: str,
    *,
    subprotocol: str = SUBPROTOCOL_MSGPACK,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    refresh: TokenSource | None = None,
    heartbeat_seconds: float | None = DEFAULT_HEARTBEAT_SECONDS,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = DEFAULT_TIMEOUT,
) -> AsyncIterator[Client]:
    """Connect to the hub at `url` (`ws://host:port/ws`) for the body of the block.

    `token` (a signed token, docs/auth.md) is sent as `Authorization:
    Bearer`; when the hub says it expires, `refresh()` (sync or async) is
    asked for a new one, which is handed over in-band (`Client.refresh`).
    `query` is added to the URL; `subprotocol` picks the codec
    (`triohub.v1.msgpack` or `triohub.v1.json`). Raises
    trio_websocket.ConnectionRejected (a HandshakeError, with the HTTP
    status and body) if the server refuses (wrong origin, bad token, unknown
    subprotocol), and trio_websocket.ConnectionTimeout after `connect_timeout`.
    """
    codec = codec_for(subprotocol)
    if query:
        parts = urlsplit(url)
        extra = urlencode(dict(query))
        url = urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    extra_headers = [(name.encode(), value.encode()) for name, value in headers.items()]
    async with trio_websocket.open_websocket_url(
        url,
        ssl_context=ssl_context,
        subprotocols=[subprotocol],
        extra_headers=extra_headers,
        connect_timeout=connect_timeout,
        disconnect_timeout=DEFAULT_TIMEOUT,
    ) as websocket:
        client = Client(websocket, ClientMachine(codec), refresh_source=refresh)
        async with trio.open_nursery() as nursery:
            client._nursery = nursery
            nursery.start_soon(client._serve_reader)
            if heartbeat_seconds:
                nursery.start_soon(client._serve_heartbeats, heartbeat_seconds)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
