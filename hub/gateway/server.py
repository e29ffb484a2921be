"""One accepted connection: TLS, HTTP/1.1 requests kept alive, and the hand-off to a WebSocket.

Every request head is read with h11 (bounded in size and time). A WebSocket
upgrade for a path in the gateway's WebSocket routes goes to the `Upgrader`
and, accepted, its handler runs once the HTTP state is let go; any other
request is answered by the HTTP routes (see `hub.http`).

Limits come first (see `hub.gateway.limits`): past `max_connections`, or
past `max_connections_per_address` from a peer that is no trusted proxy, a
connection is answered 503 or 429 before anything of it is read; behind a
trusted proxy the client's address is known from its first request head,
and counted from then on. Each WebSocket handshake spends one of its
address's `handshakes_per_second`.
"""

from __future__ import annotations

import http
import logging
import math
import ssl
from collections.abc import Callable, Mapping

import attrs
import h11
import trio

from hub.gateway.config import GatewayConfig
from hub.gateway.events import (
    GatewayEvent,
    LimitHit,
    RefusalLog,
    RejectReason,
    RequestRejected,
    reason_for_status,
    reject,
)
from hub.gateway.limits import (
    AddressLimits,
    BadForwardedHeaderError,
    ClientAddresses,
    TokenBucket,
)
from hub.gateway.upgrade import Upgrader, asks_for_websocket
from hub.gateway.websocket import ConnectInfo, WebSocketRoute, run_handler
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
from hub.transport import WebSocketTransport

__all__ = ["ConnectionServer"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class ConnectionServer:
    """Serves one connection per `serve_connection` call: the per-connection half of the gateway."""

    config: GatewayConfig
    websocket_routes: Mapping[str, WebSocketRoute]
    http_routes: tuple[HttpRoute, ...]
    upgrader: Upgrader
    observe: Callable[[GatewayEvent], None]
    ssl_context: ssl.SSLContext | None
    log: RefusalLog = attrs.field(factory=RefusalLog)
    addresses: ClientAddresses = attrs.field(factory=ClientAddresses)
    limits: AddressLimits = attrs.field(factory=lambda: AddressLimits(None, None))
    # Connections open now (HTTP and WebSocket alike).
    _open: int = attrs.field(init=False, default=0)
    # WebSocket handshakes in all (`max_handshakes_per_second`), None: no limit.
    _handshakes: TokenBucket | None = attrs.field(init=False, default=None)

    # Set by drain(): accepting has stopped, keep-alive connections wind down.
    _draining: bool = attrs.field(init=False, default=False)
    # Connections waiting for a further request on a kept-alive connection.
    _idle_scopes: set[trio.CancelScope] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        rate = self.config.max_handshakes_per_second
        self._handshakes = None if rate is None else TokenBucket(rate)

    def drain(self) -> None:
        """Close idle keep-alive connections now, and busy ones after their response."""
        self._draining = True
        for scope in self._idle_scopes:
            scope.cancel()

    @property
    def full(self) -> str | None:
        """Why no connection is taken now (`max_connections` open), or None."""
        most = self.config.max_connections
        if most is not None and self._open >= most:
            return f"{most} connections open (max_connections)"
        return None

    async def serve_connection(self, tcp_stream: trio.SocketStream) -> None:
        """Serve one accepted TCP connection until it closes; always closes it."""
        self._open += 1
        remote = _remote_address(tcp_stream)
        stream: trio.abc.Stream = tcp_stream
        if self.ssl_context is not None:
            # The TLS handshake happens on the first receive, so it falls
            # under head_timeout like the request head.
            stream = trio.SSLStream(
                tcp_stream, self.ssl_context, server_side=True, https_compatible=True
            )
        counted = _Counted()
        try:
            refusal = self._over_limit(remote, counted)
            if refusal is not None:
                await self._refuse_early(stream, remote, *refusal)
                return
            upgraded = await self._serve_requests(
                HttpConnection(stream, max_head_size=self.config.max_head_size), remote, counted
            )
            if upgraded is not None:
                # Run outside the request loop, so that its HTTP state is
                # freed: a WebSocket may stay open for days. The coroutine
                # holds what it needs; this frame lets go of the rest.
                running = run_handler(*upgraded, close_timeout=self.config.close_timeout)
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
            self._open -= 1
            if counted.address is not None:
                self.limits.release(counted.address)
            # Not shielded: at shutdown there is no point lingering, and a
            # cancelled close_lingering closes at once.
            await close_lingering(stream, timeout=self.config.close_timeout)

    def _over_limit(
        self, remote: RemoteAddress | None, counted: _Counted
    ) -> tuple[int, str, str] | None:
        """Count a new connection; (status, limit, message) if it is one too many."""
        most = self.config.max_connections
        if most is not None and self._open > most:
            return 503, "connections", "the server is full; try again later"
        if (
            remote is not None
            and not self.addresses.is_trusted(remote[0])
            and not self.limits.is_exempt(remote[0])
        ):
            if not self.limits.acquire(remote[0], trio.current_time()):
                return 429, "connections_per_address", self._too_many_message(remote[0])
            counted.address = remote[0]
        return None

    def _too_many_message(self, address: str) -> str:
        return (
            f"too many connections from {address} "
            f"(at most {self.config.max_connections_per_address}); close one first"
        )

    async def _refuse_early(
        self,
        stream: trio.abc.Stream,
        remote: RemoteAddress | None,
        status: int,
        limit: str,
        message: str,
    ) -> None:
        """Answer a connection past a limit without reading its request, then close it.

        A server may answer before the request is read (RFC 9112 §9.6); the
        lingering close then keeps the answer from being lost to a reset.
        """
        self.observe(LimitHit(limit))
        self._observe_refusal(remote, status)
        body = (message + "\n").encode()
        phrase = http.HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
        )
        with trio.move_on_after(self.config.head_timeout):
            await stream.send_all(head.encode("ascii") + body)

    def _observe_refusal(self, remote: RemoteAddress | None, status: int) -> None:
        self.observe(RequestRejected(RejectReason.LIMIT, status, None))
        self.log.refused(remote, status, RejectReason.LIMIT)

    async def _serve_requests(
        self, connection: HttpConnection, remote: RemoteAddress | None, counted: _Counted
    ) -> tuple[WebSocketTransport, ConnectInfo, WebSocketRoute] | None:
        """Serve HTTP requests until the connection ends or upgrades (returned, accepted)."""
        reused = False
        while True:
            try:
                head = await self._next_request(connection, reused=reused)
            except HttpError as err:
                await reject(
                    connection,
                    self.observe,
                    None,
                    reason_for_status(err.status),
                    err.status,
                    err.message,
                    log=self.log,
                    remote=remote,
                )
                return None
            if head is None:
                return None
            request = parse_request(head, remote=remote)
            if remote is not None and self.addresses.is_trusted(remote[0]):
                forwarded = await self._behind_proxy(connection, request, remote, counted)
                if forwarded is None:
                    return None
                request = forwarded
            route = self.websocket_routes.get(request.path)
            if route is not None and asks_for_websocket(request):
                if not await self._handshake_allowed(connection, request, route):
                    return None
                accepted = await self.upgrader.upgrade(connection, request, route)
                if accepted is None:
                    return None
                return accepted[0], accepted[1], route
            if not await self._serve_http(connection, request):
                return None
            reused = True

    async def _behind_proxy(
        self,
        connection: HttpConnection,
        request: HttpRequest,
        proxy: RemoteAddress,
        counted: _Counted,
    ) -> HttpRequest | None:
        """The request with the client's address its trusted proxy names; None if refused."""
        try:
            client = self.addresses.client(proxy[0], request.headers)
        except BadForwardedHeaderError as err:
            await self._refuse(connection, request, 400, RejectReason.BAD_REQUEST, str(err))
            return None
        remote = proxy if client is None else (client, 0)
        request = attrs.evolve(request, remote=remote)
        if counted.address is None and not self.limits.is_exempt(remote[0]):
            if not self.limits.acquire(remote[0], trio.current_time()):
                self.observe(LimitHit("connections_per_address"))
                message = self._too_many_message(remote[0])
                await self._refuse(connection, request, 429, RejectReason.LIMIT, message)
                return None
            counted.address = remote[0]
        return request

    async def _handshake_allowed(
        self, connection: HttpConnection, request: HttpRequest, route: WebSocketRoute
    ) -> bool:
        """Spend a handshake in all and of the client's address; 503 or 429 if none is left."""
        now = trio.current_time()
        if self._handshakes is not None and (wait := self._handshakes.spend(now)):
            self.observe(LimitHit("handshakes"))
            seconds = max(1, math.ceil(wait))
            await self._refuse(
                connection,
                request,
                503,
                RejectReason.LIMIT,
                f"the server takes no more WebSocket handshakes now; retry in {seconds} s",
                (("retry-after", str(seconds)),),
                path=route.path,
            )
            return False
        if request.remote is None or self.limits.is_exempt(request.remote[0]):
            return True
        address = request.remote[0]
        wait = self.limits.handshake(address, now)
        if not wait:
            return True
        self.observe(LimitHit("handshakes_per_address"))
        seconds = max(1, math.ceil(wait))
        message = (
            f"too many WebSocket handshakes from {address} "
            f"(at most {self.config.handshakes_per_second:g} a second); retry in {seconds} s"
        )
        await self._refuse(
            connection,
            request,
            429,
            RejectReason.LIMIT,
            message,
            (("retry-after", str(seconds)),),
            path=route.path,
        )
        return False

    async def _refuse(
        self,
        connection: HttpConnection,
        request: HttpRequest,
        status: int,
        reason: RejectReason,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        path: str | None = None,
    ) -> None:
        await reject(
            connection,
            self.observe,
            path,
            reason,
            status,
            message,
            headers,
            log=self.log,
            remote=request.remote,
        )

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
        http_route = match_route(self.http_routes, request.path)
        max_body_size = self.config.max_body_size
        if http_route is not None and http_route.max_body_size is not None:
            max_body_size = http_route.max_body_size
        try:
            body = await connection.read_body(
                max_size=max_body_size, timeout=self.config.head_timeout
            )
        except HttpError as err:
            await reject(
                connection,
                self.observe,
                request.path,
                reason_for_status(err.status),
                err.status,
                err.message,
                log=self.log,
                remote=request.remote,
            )
            return False
        request = attrs.evolve(request, body=body)
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


@attrs.define
class _Counted:
    """The address one connection is counted under (`AddressLimits`), once it is."""

    address: str | None = None


def _remote_address(stream: trio.SocketStream) -> RemoteAddress | None:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return None
    return str(host), int(port)
