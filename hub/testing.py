"""Test an application's services in-process: a hub without sockets, clients in memory.

    from hub.testing import open_test_hub

    async def test_a_room_greets_a_late_joiner(autojump_clock):
        async with open_test_hub(app) as hub, hub.connect() as ann, hub.connect() as bob:
            room = await ann.join("room:x", {"user": "ann"})
            await room.publish("message", {"text": "hi"}, ack=True)
            late = await bob.join("room:x", {"user": "bob"})
            ...

`open_test_hub` runs the application's `Hub` as `hub serve` would (its
routes, backend actors, supervisors, settings), but accepts no sockets:
`TestHub.connect` opens a `hub.client.Client` (the very client, with its
reconnects, buffering and recovery) over an in-memory transport
(`hub.transport.memory`) into the hub's sessions. Nothing waits on the
network or the wall clock, so with trio's autojump clock (pytest-trio's
`autojump_clock` fixture, or `trio.run(..., clock=MockClock(autojump_threshold=0))`)
a test of heartbeats, idle timeouts, grace periods, reconnects and
recovery over minutes of the hub's time runs in milliseconds.

`TestHub.drop(client)` cuts a client's connection from the server's side,
as a network failure or an eviction would (the client reconnects by
itself); `TestHub.offline()` refuses new connections while it lasts (an
outage); `TestHub.open_raw()` gives a frame-level client for tests of the
protocol itself. docs/testing.md shows a service tested with it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Final

import attrs
import trio

from hub.app import Hub, HubRuntime, serve_hub
from hub.client import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_MAX_BUFFERED,
    DEFAULT_TIMEOUT,
    Client,
    ClientOptions,
    ConnectError,
    Link,
    LinkClosed,
    TokenSource,
    open_client,
)
from hub.config import HubConfig
from hub.gateway import AuthenticationError, ConnectInfo, ConnectRequest
from hub.protocol import SUBPROTOCOL_MSGPACK, Message, codec_for
from hub.transport import MemoryClient, MemoryTransport, TransportClosed, memory_transport_pair

__all__ = ["MEMORY_PATH", "TestHub", "open_test_hub"]

#: The path in-memory connections report to the hub (`ConnectInfo.path`).
MEMORY_PATH: Final = "/memory"

# Messages a memory connection takes before its sender waits: a socket's buffers.
_SOCKET_BUFFER: Final = 64


class _MemoryLink:
    """A client's end of one in-memory connection, as `hub.client` sees a link."""

    def __init__(self, subprotocol: str, client: MemoryClient) -> None:
        self._subprotocol = subprotocol
        self._client = client

    @property
    def subprotocol(self) -> str:
        return self._subprotocol

    async def send(self, message: Message) -> None:
        await trio.lowlevel.checkpoint()
        try:
            self._client.send(message)
        except TransportClosed as closed:
            raise LinkClosed(closed.code, closed.reason) from None

    async def receive(self) -> Message:
        try:
            return await self._client.receive()
        except TransportClosed as closed:
            raise LinkClosed(closed.code, closed.reason) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await trio.lowlevel.checkpoint()
        self._client.close()


@attrs.frozen
class _Request:
    """What a test client's connections present: an identity, or what to authenticate."""

    identity: object
    query: Mapping[str, str]
    headers: Mapping[str, str]


@attrs.define(eq=False)
class _Connections:
    """One test client's dial: the server's end of its current connection, for `drop`."""

    transport: MemoryTransport | None = None
    #: When each connection was attempted, by trio's clock.
    attempts: list[float] = attrs.Factory(list)


@attrs.define(eq=False)
class TestHub:
    """A hub running in this process without sockets (get it from `open_test_hub`)."""

    __test__ = False  # not a pytest test class, whatever its name

    #: The running hub: its topics, sessions, backplane, metrics (`hub.app.HubRuntime`).
    runtime: HubRuntime
    _nursery: trio.Nursery
    _offline: int = 0
    _dials: dict[Client, _Connections] = attrs.Factory(dict)

    @contextlib.asynccontextmanager
    async def connect(
        self,
        *,
        identity: object = None,
        token: str | None = None,
        refresh: TokenSource | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocol: str = SUBPROTOCOL_MSGPACK,
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
        """A `hub.client.Client` connected in memory, for the body of the block.

        Each connection is authenticated as a WebSocket's would be (a
        `token`, else the application's authenticate hook, with `query` and
        `headers`; docs/auth.md), and refused with ConnectError (401) as it
        would be; or, given an `identity`, the connection has that identity
        (services see it as `member.identity`) and nothing is checked. The
        other keywords are those of `hub.client.connect` (docs/client-python.md).
        """
        codec_for(subprotocol)
        connections = _Connections()
        request = _Request(identity, dict(query or {}), dict(headers or {}))
        dial = functools.partial(self._dial, connections, request, subprotocol)
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
            self._dials[client] = connections
            try:
                yield client
            finally:
                del self._dials[client]

    @contextlib.asynccontextmanager
    async def _dial(
        self, connections: _Connections, request: _Request, subprotocol: str, token: str | None
    ) -> AsyncIterator[Link]:
        await trio.lowlevel.checkpoint()
        connections.attempts.append(trio.current_time())
        if self._offline:
            raise ConnectError("the hub cannot be reached (TestHub.offline)")
        if self.runtime.shutdown_requested:
            raise ConnectError("the test hub is shutting down", status=503)
        identity = await self._identity(request, token)
        transport, client = self.open_raw_pair(subprotocol=subprotocol, identity=identity)
        connections.transport = transport
        try:
            yield _MemoryLink(subprotocol, client)
        finally:
            client.close()
            if connections.transport is transport:
                connections.transport = None

    async def _identity(self, request: _Request, token: str | None) -> object:
        """Who connects: the given identity, or what the hub's authentication says."""
        if request.identity is not None:
            return request.identity
        authenticate = self.runtime.authenticate
        if authenticate is None:
            return None
        headers = {name.lower(): value for name, value in request.headers.items()}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        path = self.runtime.config.server.path
        try:
            identity = authenticate(ConnectRequest(path, request.query, headers, None))
            if inspect.isawaitable(identity):
                identity = await identity
        except AuthenticationError as refused:
            raise ConnectError(f"the hub refused the connection: {refused.reason}", 401) from None
        return identity

    def open_raw(
        self,
        *,
        subprotocol: str = "triohub.v1.json",
        identity: object = None,
        buffer: int = _SOCKET_BUFFER,
        outbox_capacity: int | None = None,
    ) -> MemoryClient:
        """A frame-level connection: send encoded frames, receive what the hub writes.

        `buffer` messages reach the client without it reading (a socket's
        buffers); past them the hub's outbox for it fills (`outbox_capacity`,
        the hub's `websocket.outbox_capacity` by default), and then it is
        evicted as a slow consumer (1013), as over a real socket.
        """
        _transport, client = self.open_raw_pair(
            subprotocol=subprotocol,
            identity=identity,
            buffer=buffer,
            outbox_capacity=outbox_capacity,
        )
        return client

    def open_raw_pair(
        self,
        *,
        subprotocol: str,
        identity: object = None,
        buffer: int = _SOCKET_BUFFER,
        outbox_capacity: int | None = None,
    ) -> tuple[MemoryTransport, MemoryClient]:
        """Like `open_raw`, with the server's end (its `close(code)` cuts the client off)."""
        runtime = self.runtime
        capacity = outbox_capacity or runtime.config.websocket.outbox_capacity
        transport, client = memory_transport_pair(
            subprotocol, buffer=buffer, outbox_capacity=capacity
        )
        info = ConnectInfo(
            path=MEMORY_PATH,
            query={},
            headers={},
            remote=None,
            subprotocol=subprotocol,
            identity=identity,
        )
        self._nursery.start_soon(runtime.serve_transport, transport, info)
        return transport, client

    def drop(
        self, client: Client, *, code: int = 1006, reason: str = "dropped by the test"
    ) -> None:
        """Cut `client`'s current connection from the server's side (it reconnects by itself).

        `code` is the close code the client learns: 1006 (abnormal, the
        default) as for a network failure, 1013 as for a slow consumer,
        1001 as for a server going away, 1008 (after which it gives up).
        """
        connections = self._dials.get(client)
        if connections is None or connections.transport is None:
            raise RuntimeError("that client is not connected to this test hub now")
        connections.transport.close(code, reason, discard=True)

    def dial_times(self, client: Client) -> list[float]:
        """When `client` tried to connect, each time (trio's clock), the first one included."""
        return list(self._dials[client].attempts)

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """New connections fail while this lasts (as when the network is down)."""
        self._offline += 1
        try:
            yield
        finally:
            self._offline -= 1


@contextlib.asynccontextmanager
async def open_test_hub(app: Hub, config: HubConfig | None = None) -> AsyncIterator[TestHub]:
    """Run `app` in this process without sockets for the body of the block.

    `config` holds the hub's settings as `hub serve` takes them
    (`hub.config.HubConfig`); its server section is unused. Leaving the
    block shuts the hub down as SIGTERM would (clients are closed, 1001).
    """
    async with trio.open_nursery() as nursery:
        runtime: HubRuntime = await nursery.start(
            functools.partial(serve_hub, app, config, listen=False)
        )
        try:
            yield TestHub(runtime, nursery)
        finally:
            runtime.request_shutdown()
