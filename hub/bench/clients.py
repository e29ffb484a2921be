"""The load generator's WebSocket connections, on picows (asyncio, callbacks).

picows parses frames in C and calls `on_ws_frame` for each, with no task or
future per message, which is what lets one process play thousands of
clients without becoming the bottleneck. Two kinds of connection:

- `HubLink` speaks the hub protocol (msgpack): requests wait on futures by
  ref; a scenario may set `on_reply` and `on_push` to handle frames straight
  from the callback.
- `PlainLink` is for the baselines: whole messages, answered in order.
- `LongPollLink` speaks the hub protocol (msgpack) over HTTP long-polling,
  with HubLink's interface: one connection held polling, one for POSTs.

Everything here runs on the event loop's one thread; nothing is locked.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import picows

from hub.bench import wire

# How long a connection's WebSocket handshake may take, in seconds. A server
# that keeps thousands of clients waiting longer than this has failed the run.
HANDSHAKE_TIMEOUT_SECONDS: Final = 30.0

# How long a request (a join, a heartbeat, a baseline's echo) may wait for
# its answer, in seconds, before the run counts it as failed (TimeoutError).
REQUEST_TIMEOUT_SECONDS: Final = 60.0

# A ref is a u32 above 0; a counter wraps before it leaves that range.
_MAX_REF: Final = 2**32 - 1

_BINARY: Final = picows.WSMsgType.BINARY
_DATA_TYPES: Final = (picows.WSMsgType.BINARY, picows.WSMsgType.TEXT)


class LinkClosedError(ConnectionError):
    """The connection closed while a request waited for its answer."""


class Link(picows.WSListener):
    """One client connection: whole messages in (`on_message`), bytes out (`send`)."""

    def __init__(self) -> None:
        self.transport: picows.WSTransport | None = None
        self.disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: The close code the server sent, if it closed the connection.
        self.close_code: int | None = None
        self._fragments: list[bytes] = []

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        kind = frame.msg_type
        if frame.fin and kind is _BINARY and not self._fragments:
            # A whole binary message: nearly every frame, so tested first.
            self.on_message(frame.get_payload_as_bytes())
        elif kind in _DATA_TYPES or kind is picows.WSMsgType.CONTINUATION:
            if frame.fin and not self._fragments:
                self.on_message(frame.get_payload_as_bytes())
                return
            self._fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                message = b"".join(self._fragments)
                self._fragments.clear()
                self.on_message(message)
        elif kind is picows.WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        # Pings are answered by picows (enable_auto_pong); pongs need nothing.

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        self.on_closed()

    def on_message(self, message: bytes) -> None:
        """Handle one whole message from the server."""

    def on_closed(self) -> None:
        """Release whatever waits on this connection."""

    def send(self, message: bytes) -> None:
        assert self.transport is not None
        self.transport.send(picows.WSMsgType.BINARY, message)

    def close_abruptly(self) -> None:
        """Close the TCP connection without a WebSocket close (as a crashed client does)."""
        if self.transport is not None:
            self.transport.underlying_transport.close()

    def close(self) -> None:
        """Close the connection politely (1000), without waiting."""
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close(picows.WSCloseCode.OK)
            self.transport.disconnect()


class HubLink(Link):
    """A hub protocol client: refs, replies and pushes, as plain msgpack lists."""

    def __init__(self) -> None:
        super().__init__()
        self._last_ref = 0
        self._waiting: dict[int, asyncio.Future[wire.Frame]] = {}
        #: Called with each Reply or Error frame no request is waiting for.
        self.on_reply: Callable[[wire.Frame], None] | None = None
        #: Called with each Push frame.
        self.on_push: Callable[[wire.Frame], None] | None = None
        #: Ended frames, in the order they came.
        self.ended: list[wire.Frame] = []

    def next_ref(self) -> int:
        self._last_ref = self._last_ref % _MAX_REF + 1
        return self._last_ref

    def on_message(self, message: bytes) -> None:
        decoded = wire.unpack(message)
        if decoded[0] == wire.PUSH:
            # One Push, not a batch: a fan-out's every message, kept short.
            if self.on_push is not None:
                self.on_push(decoded)
            return
        for frame in decoded if isinstance(decoded[0], list) else [decoded]:
            tag = frame[0]
            if tag == wire.PUSH:
                if self.on_push is not None:
                    self.on_push(frame)
            elif tag == wire.REPLY or tag == wire.ERROR:
                waiter = self._waiting.pop(frame[1], None)
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(frame)
                elif self.on_reply is not None:
                    self.on_reply(frame)
            elif tag == wire.ENDED:
                self.ended.append(frame)

    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_disconnected

    def on_closed(self) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(LinkClosedError(f"closed (code {self.close_code})"))
        self._waiting.clear()

    async def request(
        self, ref: int, message: bytes, *, timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> wire.Frame:
        """Send a request with `ref` and return its Reply (or Error) frame.

        Raises LinkClosedError if the connection closes first, TimeoutError
        after `timeout` seconds. A request given up on is forgotten; a late
        answer goes to `on_reply`.
        """
        if not self.is_open():
            raise LinkClosedError("the connection is closed")
        waiter: asyncio.Future[wire.Frame] = asyncio.get_running_loop().create_future()
        self._waiting[ref] = waiter
        try:
            self.send(message)
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            self._waiting.pop(ref, None)

    async def join(self, topic: str, params: dict[str, Any]) -> wire.Frame:
        """Join `topic`; return the ok Reply. Raises RefusedError if refused."""
        ref = self.next_ref()
        reply = await self.request(ref, wire.join(ref, topic, params))
        if reply[0] != wire.REPLY or not reply[3]:
            raise RefusedError(f"join {topic!r} refused: {reply!r}")
        return reply


class RefusedError(Exception):
    """The server answered a request with an error."""


class _HttpConnection:
    """One kept-alive HTTP/1.1 connection to the hub, one request at a time.

    Hand-written for the load generator's sake (h11 would cost it more CPU
    than the hub spends): the hub always answers with a Content-Length.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> _HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(
        self, method: str, target: str, host: str, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        content = await self.reader.readexactly(length) if length else b""
        return int(status_line.split(" ", 2)[1]), headers, content

    def close(self) -> None:
        self.writer.close()


class LongPollLink(HubLink):
    """A hub protocol client over long-polling (msgpack bodies), with HubLink's interface.

    A task polls (GET, held by the hub) and hands each message to
    `on_message`; `send` queues, and one POST at a time carries what is queued.
    """

    def __init__(self, host: str, port: int, path: str) -> None:
        super().__init__()
        self._host, self._port, self._path = host, port, path
        self._authority = f"{host}:{port}"
        self._session = ""
        self._seq = 0
        self._outgoing: list[bytes] = []
        self._posting = False
        self._open = False
        self._polls: _HttpConnection | None = None
        self._posts: _HttpConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Why the session ended, once it has.
        self.lost_reason = ""

    async def open(self) -> None:
        opener = await _HttpConnection.open(self._host, self._port)
        try:
            status, _, body = await opener.request(
                "POST", self._path, self._authority, wire.SUBPROTOCOL.encode()
            )
        finally:
            opener.close()
        if status != 200:
            raise RefusedError(f"opening a long-polling session answered {status}: {body!r}")
        opened = json.loads(body)
        if opened["subprotocol"] != wire.SUBPROTOCOL:
            raise RefusedError(f"the hub chose subprotocol {opened['subprotocol']!r}")
        self._session = f"{self._path}/{opened['session']}"
        self._polls = await _HttpConnection.open(self._host, self._port)
        self._open = True
        self._start(self._poll())

    def _start(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def is_open(self) -> bool:
        return self._open

    def on_closed(self) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(LinkClosedError(self.lost_reason))
        self._waiting.clear()

    async def _poll(self) -> None:
        assert self._polls is not None
        try:
            while self._open:
                status, headers, body = await self._polls.request(
                    "GET", f"{self._session}?ack={self._seq}", self._authority
                )
                if status != 200:
                    self._lost(f"a poll answered {status}: {body[:200]!r}")
                    return
                self._seq = int(headers["triohub-seq"])
                at = 0
                while at < len(body):
                    length = int.from_bytes(body[at : at + 4], "big")
                    self.on_message(body[at + 4 : at + 4 + length])
                    at += 4 + length
                if "triohub-close-code" in headers:
                    self.close_code = int(headers["triohub-close-code"])
                    self._lost(f"closed by the hub: {headers.get('triohub-close-reason')}")
                    return
        except (OSError, asyncio.IncompleteReadError) as error:
            self._lost(f"polling failed: {error!r}")

    def send(self, message: bytes) -> None:
        self._outgoing.append(message)
        if not self._posting:
            self._posting = True
            self._start(self._post())

    async def _post(self) -> None:
        try:
            while self._outgoing and self._open:
                batch, self._outgoing = self._outgoing, []
                body = b"".join(len(message).to_bytes(4, "big") + message for message in batch)
                status = await self._post_body(body)
                if status != 200:
                    self._lost(f"a POST answered {status}")
        except (OSError, asyncio.IncompleteReadError) as error:
            self._lost(f"sending failed: {error!r}")
        finally:
            self._posting = False

    async def _post_body(self, body: bytes) -> int:
        """POST on the kept-alive connection, opening a new one if the hub closed it idle."""
        if self._posts is None or self._posts.reader.at_eof():
            if self._posts is not None:
                self._posts.close()
            self._posts = await _HttpConnection.open(self._host, self._port)
        status, _, _ = await self._posts.request("POST", self._session, self._authority, body)
        return status

    def _lost(self, reason: str) -> None:
        if not self._open and self.disconnected.done():
            return
        self.lost_reason = reason
        self._open = False
        for connection in (self._polls, self._posts):
            if connection is not None:
                connection.close()
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        self.on_closed()

    def close_abruptly(self) -> None:
        """Stop polling and close both connections (the hub reaps the session)."""
        for task in list(self._tasks):
            task.cancel()
        self._lost("closed by the load generator")

    def close(self) -> None:
        self.close_abruptly()


class PlainLink(Link):
    """A baseline client: plain messages; each `request` takes the next message."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        #: Called with each message no request is waiting for.
        self.on_data: Callable[[bytes], None] | None = None

    def on_message(self, message: bytes) -> None:
        if self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(message)
        elif self.on_data is not None:
            self.on_data(message)

    def on_closed(self) -> None:
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(LinkClosedError(f"closed (code {self.close_code})"))
        self._waiting.clear()

    async def request(self, message: bytes, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> bytes:
        """Send `message` and return the next message the server sends.

        Raises LinkClosedError if the connection closes first, TimeoutError
        after `timeout` seconds (the next message then goes to no one).
        """
        if self.transport is None or self.transport.is_disconnected:
            raise LinkClosedError("the connection is closed")
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.send(message)
        async with asyncio.timeout(timeout):
            return await waiter


async def open_hub_link(url: str) -> HubLink:
    """Connect to the hub at `url` (ws://host:port/ws) with the msgpack subprotocol."""
    transport, link = await picows.ws_connect(
        HubLink,
        url,
        extra_headers={"Sec-WebSocket-Protocol": wire.SUBPROTOCOL},
        websocket_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
    )
    chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
    if chosen != wire.SUBPROTOCOL:
        transport.disconnect()
        raise RefusedError(f"the server chose subprotocol {chosen!r}, not {wire.SUBPROTOCOL!r}")
    assert isinstance(link, HubLink)
    return link


async def open_longpoll_link(url: str, path: str = "/poll") -> LongPollLink:
    """Open a long-polling session on the hub whose WebSocket URL is `url` (msgpack)."""
    parts = urlsplit(url)
    link = LongPollLink(parts.hostname or "127.0.0.1", parts.port or 80, path)
    await link.open()
    return link


async def open_plain_link(url: str) -> PlainLink:
    """Connect to a baseline server's `url` (ws://host:port/echo or /fanout)."""
    _, link = await picows.ws_connect(
        PlainLink, url, websocket_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS
    )
    assert isinstance(link, PlainLink)
    return link


async def _http_get(url: str, path: str) -> bytes:
    """The body of GET `path` on the port of `url` (a plain, unchunked response)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        raise RefusedError(f"GET {path} answered chunked; the benchmark reads plain bodies")
    status_line = head.split(b"\r\n", 1)[0]
    if not status_line.startswith(b"HTTP/1.1 200 "):
        raise RefusedError(f"GET {path}: {status_line!r}")
    return body


async def hub_metrics(url: str) -> dict[str, float]:
    """The hub's /metrics samples by name, labelled samples of one name added up."""
    samples: dict[str, float] = {}
    for line in (await _http_get(url, "/metrics")).decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, value = line.rpartition(" ")
        name = name_and_labels.partition("{")[0]
        samples[name] = samples.get(name, 0.0) + float(value)
    return samples


async def hub_health(url: str) -> dict[str, Any]:
    """The hub's GET /healthz: status, open connections, live topics."""
    health: dict[str, Any] = json.loads(await _http_get(url, "/healthz"))
    return health


async def hub_connection_count(url: str) -> int:
    """The hub's open connections, from GET /healthz on the port of `url`."""
    count = (await hub_health(url))["connections"]
    if not isinstance(count, int):
        raise RefusedError(f"GET /healthz: connections is {count!r}")
    return count


async def plain_connection_count(url: str) -> int:
    """A baseline server's open connections, not counting this probe's own.

    The baselines answer a WebSocket on /stats with one message, the count.
    """
    parts = urlsplit(url)
    link = await open_plain_link(f"ws://{parts.netloc}/stats")
    try:
        message = await link.request(b"count")
    finally:
        link.close()
    return int(message) - 1
