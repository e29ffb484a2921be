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

Lifecycle::

    gateway = await nursery.start(partial(serve_gateway, config, websocket_routes=...))
    gateway.port                      # bound port (port=0 picks one)
    await gateway.stop_accepting()    # close listeners; open connections carry on
    await gateway.wait_drained()      # returns once the last connection is gone
    nursery.cancel_scope.cancel()     # handlers cancelled, sockets closed with 1001
"""

from __future__ import annotations

import contextlib
import enum
import http
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
import h11
import trio

from hub.errors import HubError
from hub.http import (
    HttpConnection,
    HttpError,
    HttpRequest,
    HttpResponse,
    HttpRoute,
    RemoteAddress,
    close_lingering,
    match_route,
    parse_request,
    route_request,
)
from hub.transport import (
    DEFAULT_OUTBOX_CAPACITY,
    TransportClosed,
    WebSocketSettings,
    WebSocketTransport,
    Wire,
    accept_headers,
    valid_key,
)

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
    "ProtocolViolationClosed",
    "RejectReason",
    "RequestRejected",
    "WebSocketAccepted",
    "WebSocketHandler",
    "WebSocketRoute",
    "serve_echo",
    "serve_gateway",
    "server_ssl_context",
]

logger = logging.getLogger(__name__)

# The largest request head the gateway reads (RFC 9110 §5.4 leaves it to servers).
_MAX_HEAD_SIZE_LIMIT = 16 * 1024

# Close codes the gateway itself sends (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _optional_frozenset(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"origins must be a collection of origins, not the string {value!r}")
    assert isinstance(value, (set, frozenset, list, tuple))
    return frozenset(value)


@attrs.frozen
class GatewayConfig:
    """Where the gateway listens and the limits it enforces.

    - `host`, `port`: the listening address; `port=0` lets the kernel pick.
      `host=None` listens on every interface (with `port=0` that can mean a
      different port per address family).
    - `origins`: allowed values of a WebSocket request's Origin header, or
      None for any. `"*"` in the set also allows any. A request without an
      Origin header is not from a browser and is let through: the list
      defends browsers against cross-site WebSocket hijacking, and other
      clients are for `authenticate` to judge.
    - `certfile`, `keyfile`: PEM files; with them the port speaks only TLS
      (`https://`, `wss://`). `keyfile` may be omitted if `certfile` holds it.
    - `max_message_size`: largest WebSocket message accepted, in bytes for
      binary and characters for text; a larger one is answered with Close 1009.
    - `ping_interval`: a WebSocket peer silent this long gets a ping.
    - `idle_timeout`: a peer silent this long (no message, no pong, nothing)
      is closed with 1001. Must exceed `ping_interval`.
    - `head_timeout`: time for the TLS handshake plus a request head (and
      then an HTTP request body) to arrive; else 408, or a silent close if
      nothing at all came. Also the keep-alive idle time between requests.
    - `max_head_size`: largest request head (431 beyond), at most 16 KiB.
    - `max_body_size`: largest HTTP request body (413 beyond).
    - `auth_timeout`: time `authenticate` may take (503 beyond).
    - `close_timeout`: time for a WebSocket closing handshake, and for
      lingering while a connection closes.
    - `outbox_capacity`: messages that may wait for one WebSocket client
      beyond what its socket took (see `hub.transport`).
    """

    host: str | None = "127.0.0.1"
    port: int = 8000
    origins: frozenset[str] | None = attrs.field(default=None, converter=_optional_frozenset)
    certfile: str | None = None
    keyfile: str | None = None
    max_message_size: int = attrs.field(default=1024 * 1024, validator=_positive)
    ping_interval: float = attrs.field(default=20.0, validator=_positive)
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    head_timeout: float = attrs.field(default=10.0, validator=_positive)
    max_head_size: int = attrs.field(default=_MAX_HEAD_SIZE_LIMIT, validator=_positive)
    max_body_size: int = attrs.field(default=1024 * 1024, validator=_positive)
    auth_timeout: float = attrs.field(default=10.0, validator=_positive)
    close_timeout: float = attrs.field(default=5.0, validator=_positive)
    outbox_capacity: int = attrs.field(default=DEFAULT_OUTBOX_CAPACITY, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.idle_timeout <= self.ping_interval:
            raise ValueError(
                f"idle_timeout ({self.idle_timeout}) must exceed "
                f"ping_interval ({self.ping_interval})"
            )
        if self.max_head_size > _MAX_HEAD_SIZE_LIMIT:
            raise ValueError(f"max_head_size is at most {_MAX_HEAD_SIZE_LIMIT}")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile given without certfile")


def server_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """Build a server TLS context from PEM files, with the standard library's safe defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


class GatewayError(HubError):
    """Base of the gateway's errors."""


class AuthenticationError(GatewayError):
    """Raised by an `authenticate` hook to refuse a connection with 401.

    `reason` is sent to the client as the response body; `challenge` goes in
    the WWW-Authenticate header (RFC 9110 §11.6.1).
    """

    def __init__(self, reason: str, *, challenge: str = "Bearer") -> None:
        super().__init__(reason)
        self.reason = reason
        self.challenge = challenge


@attrs.frozen
class ConnectRequest:
    """What `authenticate` sees of a WebSocket connect request.

    `query` keeps the first value of each parameter; `headers` has
    lower-case names.
    """

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    remote: RemoteAddress | None


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

# Called with the connect request; returns the identity, or an awaitable of
# it, or raises AuthenticationError.
Authenticate = Callable[[ConnectRequest], object]


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


class RejectReason(enum.StrEnum):
    """Why a request was refused, as a metrics label."""

    ORIGIN = "origin"
    SUBPROTOCOL = "subprotocol"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"


@attrs.frozen
class WebSocketAccepted:
    path: str
    subprotocol: str | None


@attrs.frozen
class RequestRejected:
    """A request refused before any handler ran; `path` is None if unknown."""

    reason: RejectReason
    status: int
    path: str | None


@attrs.frozen
class ProtocolViolationClosed:
    """The gateway closed a WebSocket first with a violation code (1002, 1007, 1009...)."""

    path: str
    code: int


@attrs.frozen
class IdleClosed:
    """A WebSocket peer went silent past `idle_timeout` and was closed with 1001."""

    path: str


GatewayEvent = WebSocketAccepted | RequestRejected | ProtocolViolationClosed | IdleClosed


@attrs.define(eq=False)
class GatewayHandle:
    """A running gateway: where it listens and how to wind it down.

    `stop_accepting()` closes the listening sockets: new connections are
    refused while every open connection and handler carries on. The hub then
    closes its clients (with 1001, in batches, letting mailboxes drain) and
    `wait_drained()` tells it when the last connection is gone. Cancelling
    the task running `serve_gateway` ends everything still open: each
    handler is cancelled and its WebSocket closed with 1001 within
    `close_timeout`.
    """

    addresses: tuple[tuple[str, int], ...]
    tls: bool
    # Told when accepting stops, so idle keep-alive connections close.
    _on_stop: Callable[[], None]
    _accept_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _listeners_closed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _drained: trio.Event = attrs.field(init=False, factory=trio.Event)
    _connections: int = attrs.field(init=False, default=0)

    @property
    def port(self) -> int:
        """The port of the first listening address."""
        return self.addresses[0][1]

    @property
    def accepting(self) -> bool:
        return not self._listeners_closed.is_set()

    @property
    def connection_count(self) -> int:
        """Open TCP connections, HTTP and WebSocket alike."""
        return self._connections

    async def stop_accepting(self) -> None:
        """Close the listening sockets; return once they are closed.

        HTTP connections waiting idle for another request are closed too, and
        a response in progress is sent with `Connection: close`; WebSocket
        handlers are left alone.
        """
        self._on_stop()
        self._accept_scope.cancel()
        await self._listeners_closed.wait()

    async def wait_drained(self) -> None:
        """Wait until accepting has stopped and no connection is left."""
        await self._drained.wait()

    async def _accept(
        self,
        listeners: list[trio.SocketListener],
        serve_connection: Callable[[trio.SocketStream], Awaitable[None]],
        connection_nursery: trio.Nursery,
    ) -> None:
        async def serve_counted(stream: trio.SocketStream) -> None:
            self._connections += 1
            try:
                await serve_connection(stream)
            finally:
                self._connections -= 1
                self._check_drained()

        try:
            with self._accept_scope:
                # serve_listeners closes the listeners when it is cancelled,
                # and rides out EMFILE and friends instead of crashing.
                await trio.serve_listeners(
                    serve_counted, listeners, handler_nursery=connection_nursery
                )
        finally:
            self._listeners_closed.set()
            self._check_drained()

    def _check_drained(self) -> None:
        if self._listeners_closed.is_set() and self._connections == 0:
            self._drained.set()


async def serve_gateway(
    config: GatewayConfig,
    *,
    websocket_routes: Sequence[WebSocketRoute] = (),
    http_routes: Sequence[HttpRoute] = (),
    authenticate: Authenticate | None = None,
    observe: Callable[[GatewayEvent], None] | None = None,
    task_status: trio.TaskStatus[GatewayHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on `config.host`:`config.port` and serve until cancelled.

    Reports a `GatewayHandle` through `task_status` once listening. Every
    connection runs in this task's nursery, so when this returns (only by
    cancellation or error) no connection is left. `authenticate` (sync or
    async) gets a `ConnectRequest` for every WebSocket connect request that
    passed the origin and subprotocol checks; `observe` is called with a
    `GatewayEvent` for metrics.

    Raises OSError if the port cannot be bound, ssl.SSLError or OSError if
    the certificate cannot be loaded, ValueError for clashing routes.
    """
    dispatcher = _Dispatcher(
        config=config,
        websocket_routes=_index_routes(websocket_routes),
        http_routes=_check_http_routes(http_routes),
        authenticate=authenticate,
        observe=observe or _ignore_event,
        ssl_context=(
            server_ssl_context(config.certfile, config.keyfile) if config.certfile else None
        ),
    )
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    addresses = tuple(
        (str(address[0]), int(address[1]))
        for address in (listener.socket.getsockname() for listener in listeners)
    )
    handle = GatewayHandle(
        addresses=addresses, tls=dispatcher.ssl_context is not None, on_stop=dispatcher.drain
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle._accept, listeners, dispatcher.serve_connection, nursery)
        task_status.started(handle)
        await trio.sleep_forever()


async def serve_echo(transport: WebSocketTransport, info: ConnectInfo) -> None:
    """Send every message back as it came: text as text, binary as binary.

    Returns when the peer closes. Mount it with `WebSocketRoute("/echo", serve_echo)`.
    """
    while True:
        message = await transport.receive()
        transport.send(Wire(message))
        await transport.flush()


def _ignore_event(_event: GatewayEvent) -> None:
    # No observer given: the events are for metrics only.
    return


def _check_http_routes(routes: Sequence[HttpRoute]) -> tuple[HttpRoute, ...]:
    seen: set[tuple[str, bool]] = set()
    for route in routes:
        if (route.path, route.prefix) in seen:
            raise ValueError(f"two HTTP routes for {route.path!r}")
        seen.add((route.path, route.prefix))
    return tuple(routes)


def _index_routes(routes: Sequence[WebSocketRoute]) -> Mapping[str, WebSocketRoute]:
    by_path: dict[str, WebSocketRoute] = {}
    for route in routes:
        if route.path in by_path:
            raise ValueError(f"two WebSocket routes for {route.path!r}")
        by_path[route.path] = route
    return MappingProxyType(by_path)


@attrs.define(eq=False)
class _Dispatcher:
    """Serves one connection at a time per call: the per-connection half of the gateway."""

    config: GatewayConfig
    websocket_routes: Mapping[str, WebSocketRoute]
    http_routes: tuple[HttpRoute, ...]
    authenticate: Authenticate | None
    observe: Callable[[GatewayEvent], None]
    ssl_context: ssl.SSLContext | None
    # Set by drain(): accepting has stopped, keep-alive connections wind down.
    _draining: bool = attrs.field(init=False, default=False)
    # Connections waiting for a further request on a kept-alive connection.
    _idle_scopes: set[trio.CancelScope] = attrs.field(init=False, factory=set)
    # Shared by every WebSocket: their limits, and per route who hears of closes.
    websocket_settings: WebSocketSettings = attrs.field(init=False)
    _observers: dict[str, _RouteObserver] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        config = self.config
        self.websocket_settings = WebSocketSettings(
            max_message_size=config.max_message_size,
            ping_interval=config.ping_interval,
            idle_timeout=config.idle_timeout,
            close_timeout=config.close_timeout,
            outbox_capacity=config.outbox_capacity,
        )
        self._observers = {
            path: _RouteObserver(path, self.observe) for path in self.websocket_routes
        }

    def drain(self) -> None:
        """Close idle keep-alive connections now, and busy ones after their response."""
        self._draining = True
        for scope in self._idle_scopes:
            scope.cancel()

    async def serve_connection(self, tcp_stream: trio.SocketStream) -> None:
        """Serve one accepted TCP connection until it closes; always closes it."""
        remote = _remote_address(tcp_stream)
        stream: trio.abc.Stream = tcp_stream
        if self.ssl_context is not None:
            # The TLS handshake happens on the first receive, so it falls
            # under head_timeout like the request head.
            stream = trio.SSLStream(
                tcp_stream, self.ssl_context, server_side=True, https_compatible=True
            )
        try:
            upgraded = await self._serve_requests(
                HttpConnection(stream, max_head_size=self.config.max_head_size), remote
            )
            if upgraded is not None:
                # Run outside the request loop, so that its HTTP state is
                # freed: a WebSocket may stay open for days. The coroutine
                # holds what it needs; this frame lets go of the rest.
                running = self._run_handler(*upgraded)
                del upgraded
                await running
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            # The peer left mid-request, or its TLS handshake failed.
            logger.debug("connection from %s ended: %r", remote, err)
        except Exception:
            # One connection's failure must cost nobody else anything: a bug
            # here is logged with its traceback, and the gateway serves on.
            logger.exception("error serving connection from %s", remote)
        finally:
            # Not shielded: at shutdown there is no point lingering, and a
            # cancelled close_lingering closes at once.
            await close_lingering(stream, timeout=self.config.close_timeout)

    async def _serve_requests(
        self, connection: HttpConnection, remote: RemoteAddress | None
    ) -> tuple[WebSocketTransport, ConnectInfo, WebSocketRoute] | None:
        """Serve HTTP requests until the connection ends or upgrades (returned, accepted)."""
        reused = False
        while True:
            try:
                head = await self._next_request(connection, reused=reused)
            except HttpError as err:
                await self._reject(
                    connection, None, _reason_for_status(err.status), err.status, err.message
                )
                return None
            if head is None:
                return None
            request = parse_request(head, remote=remote)
            route = self.websocket_routes.get(request.path)
            if route is not None and _asks_for_websocket(request):
                accepted = await self._serve_websocket(connection, request, route)
                if accepted is None:
                    return None
                return accepted[0], accepted[1], route
            if not await self._serve_http(connection, request):
                return None
            reused = True

    async def _next_request(
        self, connection: HttpConnection, *, reused: bool
    ) -> h11.Request | None:
        """Read the next request head; None if the peer closed or the gateway is draining.

        A connection's first request is always read. A kept-alive connection
        waiting for another one is closed when drain() is called; a request
        that was just arriving then is lost, as HTTP allows on an idle
        connection (clients retry it, RFC 9112 §9.3.1).
        """
        if not reused:
            return await connection.next_request(timeout=self.config.head_timeout)
        if self._draining:
            return None
        with trio.CancelScope() as idle_scope:
            self._idle_scopes.add(idle_scope)
            try:
                return await connection.next_request(timeout=self.config.head_timeout)
            finally:
                self._idle_scopes.discard(idle_scope)
        return None

    async def _serve_http(self, connection: HttpConnection, request: HttpRequest) -> bool:
        """Answer one plain HTTP request; return whether the connection may be reused."""
        try:
            body = await connection.read_body(
                max_size=self.config.max_body_size, timeout=self.config.head_timeout
            )
        except HttpError as err:
            await self._reject(
                connection, request.path, _reason_for_status(err.status), err.status, err.message
            )
            return False
        request = attrs.evolve(request, body=body)
        http_route = match_route(self.http_routes, request.path)
        # A WebSocket path answers 426 to plain HTTP unless an exact HTTP
        # route claims it too (a prefix route, such as static files at "/",
        # does not).
        if request.path in self.websocket_routes and (http_route is None or http_route.prefix):
            response = HttpResponse.text(
                "this path speaks WebSocket\n",
                status=http.HTTPStatus.UPGRADE_REQUIRED,
                headers=(("upgrade", "websocket"), ("connection", "upgrade")),
            )
        else:
            try:
                response = await route_request(self.http_routes, request)
            except Exception:
                # A broken route answers 500 and is logged; the connection
                # and the gateway carry on.
                logger.exception("HTTP handler for %s %s failed", request.method, request.path)
                response = HttpResponse.text(
                    "internal server error\n", status=http.HTTPStatus.INTERNAL_SERVER_ERROR
                )
        if self._draining:
            response = attrs.evolve(response, headers=(*response.headers, ("connection", "close")))
        await connection.send_response(response, head_only=request.method == "HEAD")
        return connection.keep_alive

    async def _serve_websocket(
        self,
        connection: HttpConnection,
        request: HttpRequest,
        route: WebSocketRoute,
    ) -> tuple[WebSocketTransport, ConnectInfo] | None:
        """Check and answer an upgrade request; return the open transport, or None if refused."""
        origin = request.headers.get("origin")
        if not self._origin_allowed(origin):
            await self._reject(
                connection, route.path, RejectReason.ORIGIN, 403, f"origin not allowed: {origin}"
            )
            return None
        problem = _handshake_problem(request)
        if problem is not None:
            status, message, headers = problem
            await self._reject(
                connection, route.path, RejectReason.BAD_REQUEST, status, message, headers
            )
            return None
        subprotocol = _choose_subprotocol(route.subprotocols, request.headers)
        if route.subprotocols and subprotocol is None:
            await self._reject(
                connection,
                route.path,
                RejectReason.SUBPROTOCOL,
                400,
                "unsupported subprotocol; supported: " + ", ".join(route.subprotocols),
            )
            return None
        connect_request = ConnectRequest(
            path=request.path, query=request.query, headers=request.headers, remote=request.remote
        )
        try:
            identity = await self._authenticate(connect_request)
        except AuthenticationError as err:
            await self._reject(
                connection,
                route.path,
                RejectReason.AUTH,
                401,
                err.reason,
                (("www-authenticate", err.challenge),),
            )
            return None
        except trio.TooSlowError:
            await self._reject(
                connection, route.path, RejectReason.AUTH, 503, "authentication timed out"
            )
            return None
        key = request.headers["sec-websocket-key"]
        try:
            response, trailing = connection.accept_upgrade(accept_headers(key, subprotocol))
        except HttpError as err:
            await self._reject(
                connection, route.path, _reason_for_status(err.status), err.status, err.message
            )
            return None
        path = route.path
        transport = WebSocketTransport(
            connection.stream,
            self.websocket_settings,
            subprotocol=subprotocol,
            trailing=trailing,
            observer=self._observers[path],
        )
        # The 101 goes out as the transport's first bytes: written at once,
        # unless the socket is full (or TLS), and then flushed here.
        transport.send_raw(response)
        if transport.backlog:
            await transport.flush()
        self.observe(WebSocketAccepted(path, subprotocol))
        info = ConnectInfo(
            path=request.path,
            query=request.query,
            headers=request.headers,
            remote=request.remote,
            subprotocol=subprotocol,
            identity=identity,
        )
        return transport, info

    async def _run_handler(
        self, transport: WebSocketTransport, info: ConnectInfo, route: WebSocketRoute
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
            with trio.move_on_after(self.config.close_timeout, shield=True):
                with contextlib.suppress(TransportClosed):
                    await transport.flush()
            raise
        # No-op if the handler or the peer closed already; else the closing
        # handshake, bounded by close_timeout. Not shielded: a shutdown
        # arriving now just closes the socket.
        transport.close(CLOSE_NORMAL, "handler finished")
        await transport.aclose()

    async def _authenticate(self, request: ConnectRequest) -> object:
        if self.authenticate is None:
            return None
        with trio.fail_after(self.config.auth_timeout):
            identity = self.authenticate(request)
            if inspect.isawaitable(identity):
                identity = await identity
        return identity

    def _origin_allowed(self, origin: str | None) -> bool:
        origins = self.config.origins
        return origins is None or origin is None or "*" in origins or origin in origins

    async def _reject(
        self,
        connection: HttpConnection,
        path: str | None,
        reason: RejectReason,
        status: int,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.observe(RequestRejected(reason, status, path))
        await connection.send_error(status, message, headers=headers)


@attrs.frozen
class _RouteObserver:
    """Turns one route's transport closes into gateway events."""

    path: str
    observe: Callable[[GatewayEvent], None]

    def violation(self, code: int) -> None:
        self.observe(ProtocolViolationClosed(self.path, code))

    def idle(self) -> None:
        self.observe(IdleClosed(self.path))


def _remote_address(stream: trio.SocketStream) -> RemoteAddress | None:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return None
    return str(host), int(port)


def _reason_for_status(status: int) -> RejectReason:
    if status == http.HTTPStatus.REQUEST_TIMEOUT:
        return RejectReason.TIMEOUT
    if status in (
        http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ):
        return RejectReason.TOO_LARGE
    return RejectReason.BAD_REQUEST


def _tokens(header: str | None) -> list[str]:
    return [token.strip() for token in (header or "").split(",") if token.strip()]


def _asks_for_websocket(request: HttpRequest) -> bool:
    return "websocket" in (token.lower() for token in _tokens(request.headers.get("upgrade")))


def _handshake_problem(
    request: HttpRequest,
) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
    """Check an upgrade request (RFC 6455 §4.2.1), so the client gets a clear answer."""
    headers = request.headers
    if request.method != "GET":
        return 400, "a WebSocket handshake must be a GET request", ()
    if "upgrade" not in (token.lower() for token in _tokens(headers.get("connection"))):
        return 400, "missing 'Connection: Upgrade'", ()
    if headers.get("upgrade", "").lower() != "websocket":
        return 400, "'Upgrade' must be exactly 'websocket'", ()
    if headers.get("sec-websocket-version") != "13":
        return 426, "WebSocket version 13 required", (("sec-websocket-version", "13"),)
    if not headers.get("sec-websocket-key"):
        return 400, "missing 'Sec-WebSocket-Key'", ()
    if not valid_key(headers["sec-websocket-key"]):
        return 400, "'Sec-WebSocket-Key' must be 16 bytes in base64", ()
    try:
        headers["host"].encode("latin-1").decode("idna")
    except KeyError:
        return 400, "missing 'Host'", ()
    except UnicodeError:
        return 400, "malformed 'Host'", ()
    return None


def _choose_subprotocol(supported: tuple[str, ...], headers: Mapping[str, str]) -> str | None:
    offered = set(_tokens(headers.get("sec-websocket-protocol")))
    return next((name for name in supported if name in offered), None)


